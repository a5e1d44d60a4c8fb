"""Operations on a union filesystem, as values: drawn by Hypothesis, applied to anything.

Each operation names one method of :class:`FileSystemOps`, the write API that
:class:`~pytest_overlay.model.UnionModel` offers and that
:class:`~pytest_overlay.testing.DirectoryOps` maps onto :mod:`os` calls. Printing an
operation gives the call, so a list of them reads as a script.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar, Protocol

__all__ = [
    "AppendBytes",
    "Chmod",
    "CreateSymlink",
    "FileSystemOps",
    "Link",
    "Mkdir",
    "Operation",
    "Rename",
    "Rmdir",
    "Truncate",
    "Unlink",
    "WriteBytes",
]


class FileSystemOps(Protocol):
    """The write operations, named and behaving like the :mod:`os` functions they mirror.

    Paths are relative to the union's root. Failures raise :class:`OSError` with the
    errno the kernel gives.
    """

    def write_bytes(self, path: str, data: bytes, /) -> None: ...

    def append_bytes(self, path: str, data: bytes, /) -> None: ...

    def truncate(self, path: str, length: int, /) -> None: ...

    def mkdir(self, path: str, mode: int = 0o777, /) -> None: ...

    def rmdir(self, path: str, /) -> None: ...

    def unlink(self, path: str, /) -> None: ...

    def rename(self, src: str, dst: str, /) -> None: ...

    def symlink(self, target: str, path: str, /) -> None: ...

    def chmod(self, path: str, mode: int, /) -> None: ...

    def link(self, src: str, dst: str, /) -> None: ...


@dataclass(frozen=True, repr=False)
class Operation:
    """One call of a :class:`FileSystemOps` method; the fields are its arguments in order."""

    method: ClassVar[str]

    def arguments(self) -> tuple[object, ...]:
        return tuple(getattr(self, f.name) for f in fields(self))

    def apply(self, fs: FileSystemOps) -> None:
        """Call the method on *fs*; an OSError from it propagates unchanged."""
        getattr(fs, self.method)(*self.arguments())

    def _shown_arguments(self) -> str:
        return ", ".join(
            f"{getattr(self, f.name):#o}" if f.name == "mode" else repr(getattr(self, f.name))
            for f in fields(self)
        )

    def __str__(self) -> str:
        return f"{self.method}({self._shown_arguments()})"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._shown_arguments()})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        # Hypothesis prints drawn values with its own pretty printer; keep it short.
        printer.text(repr(self))


@dataclass(frozen=True, repr=False)
class WriteBytes(Operation):
    method = "write_bytes"
    path: str
    data: bytes


@dataclass(frozen=True, repr=False)
class AppendBytes(Operation):
    method = "append_bytes"
    path: str
    data: bytes


@dataclass(frozen=True, repr=False)
class Truncate(Operation):
    method = "truncate"
    path: str
    length: int


@dataclass(frozen=True, repr=False)
class Mkdir(Operation):
    method = "mkdir"
    path: str
    mode: int = 0o777


@dataclass(frozen=True, repr=False)
class Rmdir(Operation):
    method = "rmdir"
    path: str


@dataclass(frozen=True, repr=False)
class Unlink(Operation):
    method = "unlink"
    path: str


@dataclass(frozen=True, repr=False)
class Rename(Operation):
    method = "rename"
    src: str
    dst: str


@dataclass(frozen=True, repr=False)
class CreateSymlink(Operation):
    method = "symlink"
    target: str
    path: str


@dataclass(frozen=True, repr=False)
class Chmod(Operation):
    method = "chmod"
    path: str
    mode: int


@dataclass(frozen=True, repr=False)
class Link(Operation):
    method = "link"
    src: str
    dst: str
