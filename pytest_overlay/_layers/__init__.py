"""Layers as data, their on-disk formats, union lookups and state differences."""
