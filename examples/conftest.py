"""The example suite reads as a tutorial; see test_tutorial.py."""
