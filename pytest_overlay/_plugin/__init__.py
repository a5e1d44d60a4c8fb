"""What wires pytest to the package: configuration, session, fixtures, reports.

``pytest_overlay.plugin`` is the entry point and only delegates here."""
