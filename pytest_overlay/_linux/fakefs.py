"""Recognising an in-memory fake of the filesystem (pyfakefs) active in this process.

pyfakefs replaces ``os``, ``os.path``, ``pathlib`` and ``open`` in every loaded module,
this one included, while its ``fs`` fixture is set up. Nothing real can be mounted or
even seen then: without this check a layer's path "does not exist", because it is
looked up in the fake.
"""

from __future__ import annotations

import os
import posix

from pytest_overlay._errors import OverlayError

__all__ = ["check_real_filesystem", "fake_filesystem"]


def fake_filesystem() -> str | None:
    """The name of the package faking ``os`` in this module right now, or None.

    ``posix`` is the C module under ``os``, which pyfakefs leaves alone: when this
    module's ``os.stat`` is not ``posix.stat``, our ``os`` has been swapped for a fake.
    """
    if os.stat is posix.stat:
        return None
    return type(os).__module__.partition(".")[0] or "an unknown package"


def check_real_filesystem() -> None:
    """Raise :class:`OverlayError` if a fake filesystem hides the real one."""
    faker = fake_filesystem()
    if faker is not None:
        raise OverlayError(
            f"{faker}'s fake filesystem is active (pyfakefs's 'fs' fixture was set up "
            "first): unions are real directories, which the fake hides. Request "
            "overlay_stack before fs (earlier in the test's arguments) and map the union "
            "into the fake with fs.add_real_directory(overlay_stack.merged), or pause the "
            "fake around the overlay with fs.pause() and fs.resume()"
        )
