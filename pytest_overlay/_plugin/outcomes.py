"""Failing a fixture with one short message."""

from __future__ import annotations

from typing import NoReturn

import pytest


def fail(message: str) -> NoReturn:
    """Fail the test with *message* alone: no traceback, and no chain.

    Called while handling an error, ``pytest.fail`` would print that error too, under
    "During handling of the above exception": the same words twice. *message* says it all.
    """
    raise pytest.fail.Exception(message, pytrace=False) from None
