"""Where ``pytest --fixtures`` lists the plugin's fixtures."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["PLUGIN_MODULE", "listed_with_the_plugin"]

#: The pytest11 entry point, under whose heading every fixture of ours is listed.
PLUGIN_MODULE = "pytest_overlay.plugin"

F = TypeVar("F", bound=Callable[..., Any])


def listed_with_the_plugin(function: F) -> F:
    """List *function*'s fixture with the plugin's others (apply under ``pytest.fixture``).

    pytest --fixtures puts fixtures under one heading per module of their function.
    Ours live in several private modules (some are plugins of their own, registered
    only when needed), which would make as many headings, named after private modules.
    """
    function.__module__ = PLUGIN_MODULE
    return function
