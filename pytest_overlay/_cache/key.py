"""The key of a cached build: a digest of everything the plugin can see of its inputs."""

from __future__ import annotations

import hashlib
import inspect
import json
import linecache
import tokenize
from collections.abc import Callable, Sequence
from pathlib import Path
from types import CodeType

from pytest_overlay._cache.store import FORMAT
from pytest_overlay._errors import OverlayError
from pytest_overlay._layers.digest import tree_digest

__all__ = ["build_identity", "cache_key"]

#: What a base layer contributes: a directory (digested now) or the key of a cached layer.
BasePart = Path | str


def _source(code: CodeType) -> str:
    """The source text of the function whose code is *code*, or "" if it has none.

    What ``inspect.getsource`` returns, without its ``inspect.getmodule`` call, which scans
    every loaded module and took 30-50 ms here, more than the rest of a cache hit.
    """
    linecache.checkcache(code.co_filename)
    lines = linecache.getlines(code.co_filename)
    if not lines or code.co_firstlineno > len(lines):
        return ""
    try:
        return "".join(inspect.getblock(lines[code.co_firstlineno - 1 :]))
    except (IndentationError, SyntaxError, tokenize.TokenError):
        return ""


def build_identity(build: Callable[..., object]) -> dict[str, str]:
    """The build function's module, qualified name and source (or bytecode, if no source)."""
    code = getattr(build, "__code__", None)
    if not isinstance(code, CodeType):
        # A callable object: key its class's __call__.
        call = type(build).__dict__.get("__call__")
        code = getattr(call, "__code__", None)
    if not isinstance(code, CodeType):
        raise OverlayError(
            f"cannot key the build function {build!r}: it has no Python code; pass a plain "
            "function"
        )
    source = _source(code) or code.co_code.hex()
    return {
        "module": str(getattr(build, "__module__", "")),
        "qualname": str(getattr(build, "__qualname__", repr(build))),
        "source": source,
    }


def user_key(key: str | bytes | Callable[[], object] | None) -> str:
    """The value of ``key=``: the string, or what the callable returns, as text."""
    value = key() if callable(key) else key
    if value is None:
        return ""
    if isinstance(value, bytes):
        return hashlib.sha256(value).hexdigest()
    return str(value)


def cache_key(
    bases: Sequence[BasePart],
    build: Callable[..., object],
    key: str,
    backend: str,
    *,
    content: bool = False,
) -> str:
    """The sha256 (hex) naming the entry of *build* run on *bases*, top-most first.

    A :class:`~pathlib.Path` base is digested (metadata, or data too with *content*); a
    string is the key of a cached layer the base was built as, which already covers
    everything below it. *backend* is part of the key because each backend marks
    whiteouts and opaque directories its own way.
    """
    parts: list[str] = []
    for base in bases:
        if isinstance(base, Path):
            parts.append("dir:" + tree_digest(base, content=content))
        else:
            parts.append("cached:" + base)
    document = {
        "format": FORMAT,
        "bases": parts,
        "build": build_identity(build),
        "key": key,
        "backend": backend,
        "content": content,
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()
