"""A reference model of overlayfs semantics, in pure Python.

:class:`UnionModel` keeps read-only lower layers and a writable upper layer, offers the
write operations of :mod:`os` under the same names, and answers what a reader of the
merged directory sees (:meth:`~UnionModel.merged`), which upper layer the kernel leaves
behind (:meth:`~UnionModel.upper`) and what that layer changes
(:meth:`~UnionModel.changes`). Errors are :class:`OSError` with the errno that Linux
overlayfs gives (measured on 6.18 with ``redirect_dir=off``, ``index=off``,
``metacopy=off``, as root and with ``userxattr``).

What the model deliberately does not cover is listed in ``docs/model.rst``: timestamps,
ownership and permission checks, xattrs other than the opaque marker, hard link counts and
inode numbers, special files, ``redirect_dir``/``metacopy``/``index``, and symlinks that
leave the tree (:class:`UnmodelledError`).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final

from pytest_overlay._layers.changes import Change
from pytest_overlay._layers.io import read_layer
from pytest_overlay._layers.layer import (
    WHITEOUT,
    Dir,
    Entry,
    File,
    Layer,
    Symlink,
    Whiteout,
    check_path,
    parent_of,
)
from pytest_overlay._layers.union import Stack, UnionView, diff_layer, join

__all__ = ["UnionModel", "UnmodelledError"]

#: Linux gives ELOOP after following this many symlinks in one path walk.
MAXSYMLINKS: Final = 40


class UnmodelledError(NotImplementedError):
    """The model cannot say what the kernel would do, e.g. for a symlink out of the tree.

    Raised before anything changes, so a caller can skip the operation and go on.
    """


@dataclass(eq=False)
class _Inode:
    """A non-directory in the upper layer. Hard links share one object (``is``)."""

    entry: File | Symlink
    #: For a copied-up file: the name whose overlay inode was made from the lower file
    #: (the name it was copied up through, wherever it was renamed to since). Other
    #: names linked to it later are looked up afresh, which matters when unprivileged.
    origin_name: str | None = None


_Node = Dir | Whiteout | _Inode


def _entry(node: _Node) -> Entry:
    return node.entry if isinstance(node, _Inode) else node


class _Upper:
    """The model's mutable upper layer; a lookup source like a :class:`Layer`."""

    def __init__(self) -> None:
        self._nodes: dict[str, _Node] = {}
        self._children: dict[str, set[str]] = {}

    def get(self, path: str, /) -> Entry | None:
        node = self._nodes.get(path)
        return None if node is None else _entry(node)

    def children(self, path: str, /) -> Iterable[str]:
        return self._children.get(path, ())

    def node(self, path: str) -> _Node | None:
        return self._nodes.get(path)

    def set(self, path: str, node: _Node) -> None:
        if path not in self._nodes:
            parent, _, name = path.rpartition("/")
            self._children.setdefault(parent, set()).add(name)
        self._nodes[path] = node

    def remove(self, path: str) -> dict[str, _Node]:
        """Take *path* and its subtree out; keys of the result are relative to *path*."""
        taken: dict[str, _Node] = {}
        if path not in self._nodes:
            return taken
        parent, _, name = path.rpartition("/")
        self._children[parent].discard(name)
        for rel, full in list(self._subtree(path, "")):
            taken[rel] = self._nodes.pop(full)
            self._children.pop(full, None)
        return taken

    def _subtree(self, full: str, rel: str) -> Iterator[tuple[str, str]]:
        yield rel, full
        for name in self._children.get(full, ()):
            yield from self._subtree(join(full, name), join(rel, name))

    def insert(self, path: str, nodes: Mapping[str, _Node]) -> None:
        """Put back a subtree taken by :meth:`remove`, parents first."""
        for rel in sorted(nodes, key=lambda r: r.count("/") if r else -1):
            self.set(_below(path, rel), nodes[rel])

    def layer(self) -> Layer:
        return Layer({path: _entry(node) for path, node in self._nodes.items()})


def _forget_names(path: str, removed: Mapping[str, _Node]) -> None:
    """The names in *removed* (a subtree taken out at *path*) are gone for good."""
    for rel, node in removed.items():
        if isinstance(node, _Inode) and node.origin_name == _below(path, rel):
            node.origin_name = None


def _below(path: str, rel: str) -> str:
    """*rel* (a key of a subtree taken out at *path*, "" for *path* itself) in full."""
    return f"{path}/{rel}" if rel else path


@dataclass(frozen=True)
class _Found:
    """Where a path walk ended: *path* has no symlink before its last component."""

    path: str
    stack: Stack | None  # None: the name is free (its parent exists and is a directory)
    entry: Entry | None


# The root has no entry in any layer; a walk that ends on it reports this stand-in.
_ROOT: Final = Dir()


def _error(code: int, path: str, path2: str | None = None) -> OSError:
    # OSError(errno, ...) comes back as the matching subclass (FileNotFoundError...),
    # exactly what the os functions raise.
    return OSError(code, os.strerror(code), path, None, path2)


def _within(path: str, ancestor: str) -> bool:
    """Whether *path* is strictly inside directory *ancestor*."""
    return path.startswith(ancestor + "/") if ancestor else bool(path)


class UnionModel:
    """Overlayfs on *lowers* (top-most first, like ``lowerdir=``) with an empty upper layer.

    *unprivileged* models a mount made in a user namespace with ``userxattr``; it differs
    from a root mount in one place only: ``rename()`` between the name a file was copied
    up through and a name linked to it afterwards fails with ESTALE instead of doing
    nothing.

    Lower layers may hold whiteouts and opaque directories, as the layers of a
    multi-layer image do. Paths are POSIX relative paths without ``.`` or ``..``
    components (anything else is a :class:`ValueError`: a bug in the caller, not an
    error the kernel would report).
    """

    def __init__(
        self,
        lowers: Iterable[Mapping[str, Entry]] = (),
        *,
        umask: int = 0o022,
        unprivileged: bool = False,
    ) -> None:
        self.lowers: tuple[Layer, ...] = tuple(
            lower if isinstance(lower, Layer) else Layer(lower) for lower in lowers
        )
        self.umask = umask
        #: Model a mount made in a user namespace (``userxattr``) rather than by root.
        self.unprivileged = unprivileged
        self._upper = _Upper()
        self._view = UnionView((self._upper, *self.lowers))

    @classmethod
    def from_dirs(
        cls,
        paths: Iterable[str | os.PathLike[str]],
        *,
        umask: int = 0o022,
        unprivileged: bool = False,
    ) -> UnionModel:
        """A model of real lower directories (top-most first), read with ``read_layer``."""
        return cls([read_layer(path) for path in paths], umask=umask, unprivileged=unprivileged)

    @property
    def umask(self) -> int:
        """The process umask the operations run under (default 0o022)."""
        return self._umask

    @umask.setter
    def umask(self, value: int) -> None:
        if not 0 <= value <= 0o777:
            raise ValueError(f"umask {value:#o} is not within 0o000..0o777")
        self._umask = value

    def __repr__(self) -> str:
        return f"UnionModel({list(self.lowers)!r}, umask={self.umask:#o})"

    # -- observations ------------------------------------------------------------------

    def merged(self) -> Layer:
        """What a reader of the merged directory sees: no whiteouts, no opaque flags."""
        return self._view.flatten()

    def upper(self) -> Layer:
        """The upper layer as the kernel would leave it on disk."""
        return self._upper.layer()

    def changes(self) -> list[Change]:
        """The upper layer as sorted changes, like ``OverlayStack.changes()``."""
        return diff_layer(self.upper(), self.lowers)

    def lookup(self, path: str) -> Entry | None:
        """The merged entry at *path* (not following a final symlink), None if absent.

        Raises OSError like ``os.lstat`` when a directory on the way is missing or is not
        a directory.
        """
        found = self._walk(path, follow=False)
        return found.entry

    # -- operations --------------------------------------------------------------------

    def write_bytes(self, path: str, data: bytes) -> None:
        """``open(path, "wb").write(data)``: O_WRONLY|O_CREAT|O_TRUNC, then write."""
        self._open_for_write(path, bytes(data), truncate=True)

    def append_bytes(self, path: str, data: bytes) -> None:
        """``open(path, "ab").write(data)``: O_WRONLY|O_CREAT|O_APPEND, then write."""
        self._open_for_write(path, bytes(data), truncate=False)

    def truncate(self, path: str, length: int) -> None:
        """``os.truncate``: copies the file up even when the length does not change."""
        if length < 0:
            raise _error(errno.EINVAL, path)
        found = self._walk(path, follow=True)
        if found.entry is None:
            raise _error(errno.ENOENT, path)
        if isinstance(found.entry, Dir):
            raise _error(errno.EISDIR, path)
        inode = self._copy_up_inode(found.path)
        old = inode.entry
        assert isinstance(old, File)
        inode.entry = File(old.data[:length].ljust(length, b"\0"), old.mode)

    def mkdir(self, path: str, mode: int = 0o777) -> None:
        """``os.mkdir``. Over a whiteout in the upper layer the new directory is opaque."""
        found = self._walk(path, follow=False)
        if found.entry is not None:
            raise _error(errno.EEXIST, path)
        parent_path = parent_of(found.path)
        parent_stack = self._view.stack(parent_path)
        assert parent_stack is not None
        parent = self._view.entry(parent_stack, parent_path) if parent_path else _ROOT
        assert isinstance(parent, Dir)
        # A setgid directory passes the bit on to new subdirectories (inode_init_owner).
        new_mode = (mode & 0o1777 & ~self.umask) | (parent.mode & stat.S_ISGID)
        opaque = isinstance(self._upper.node(found.path), Whiteout)
        self._create(found.path, Dir(new_mode, opaque=opaque))

    def rmdir(self, path: str) -> None:
        """``os.rmdir``: allowed when the merged directory is empty, even if its upper
        directory still holds whiteouts; leaves a whiteout if a lower layer has the name."""
        found = self._walk(path, follow=False)
        if found.entry is None or found.stack is None:
            raise _error(errno.ENOENT, path)
        if not isinstance(found.entry, Dir):
            raise _error(errno.ENOTDIR, path)
        if self._view.listdir(found.stack, found.path):
            raise _error(errno.ENOTEMPTY, path)
        self._remove(found.path)

    def unlink(self, path: str) -> None:
        """``os.unlink``: leaves a whiteout if a lower layer has the name."""
        found = self._walk(path, follow=False)
        if found.entry is None:
            raise _error(errno.ENOENT, path)
        if isinstance(found.entry, Dir):
            raise _error(errno.EISDIR, path)
        self._remove(found.path)

    def rename(self, src: str, dst: str) -> None:
        """``os.rename``, checks in the kernel's order.

        A directory that exists in a lower layer cannot move (EXDEV, as without
        ``redirect_dir``; ``mv`` then copies). A lower non-directory is copied up and a
        whiteout is left at its old name. A directory moved into a merged directory
        becomes opaque, so no lower directory of the same name shows through it.
        """
        old = self._walk(src, follow=False)
        new = self._walk(dst, follow=False)
        if old.entry is None:
            raise _error(errno.ENOENT, src, dst)
        if old.path == new.path:
            return
        if _within(new.path, old.path):
            raise _error(errno.EINVAL, src, dst)
        if _within(old.path, new.path):
            raise _error(errno.ENOTEMPTY, src, dst)
        is_dir = isinstance(old.entry, Dir)
        if new.entry is not None:
            node = self._upper.node(old.path)
            if isinstance(node, _Inode) and node is self._upper.node(new.path):
                if self.unprivileged and node.origin_name in (old.path, new.path):
                    # Measured on 6.18: unprivileged, overlayfs cannot decode the origin
                    # of a name linked after copy-up, so that name gets an overlay inode
                    # of its own; the name copied up through keeps the one made from the
                    # lower file. Two inodes, one upper file: ovl_rename fails.
                    raise _error(errno.ESTALE, src, dst)
                return  # two names of one inode: rename(2) does nothing
            if is_dir and not isinstance(new.entry, Dir):
                raise _error(errno.ENOTDIR, src, dst)
            if not is_dir and isinstance(new.entry, Dir):
                raise _error(errno.EISDIR, src, dst)
        if is_dir and old.stack != (0,):
            raise _error(errno.EXDEV, src, dst)
        if isinstance(new.entry, Dir) and new.stack and self._view.listdir(new.stack, new.path):
            if new.stack == (0,):
                # A pure-upper target is only found non-empty by the upper filesystem's
                # own rename, after ovl_rename has already marked the source opaque
                # (measured: the failed rename leaves that mark behind).
                self._mark_opaque_if_merged_parent(old.path, parent_of(new.path))
            raise _error(errno.ENOTEMPTY, src, dst)
        leave_whiteout = self._lower_positive(old.path)
        if not is_dir:
            self._copy_up_inode(old.path)
        self._copy_up_parents(new.path)
        if is_dir:
            self._mark_opaque_if_merged_parent(old.path, parent_of(new.path))
        moved = self._upper.remove(old.path)
        _forget_names(new.path, self._upper.remove(new.path))
        for rel, node in moved.items():
            if isinstance(node, _Inode) and node.origin_name == _below(old.path, rel):
                node.origin_name = _below(new.path, rel)
        self._upper.insert(new.path, moved)
        if leave_whiteout:
            self._upper.set(old.path, WHITEOUT)

    def symlink(self, target: str, path: str) -> None:
        """``os.symlink(target, path)``; *target* is stored as given, never resolved."""
        if not target:
            raise _error(errno.ENOENT, target)
        if "\0" in target:
            raise ValueError("embedded null byte")
        found = self._walk(path, follow=False)
        if found.entry is not None:
            raise _error(errno.EEXIST, path)
        self._create(found.path, _Inode(Symlink(target)))

    def chmod(self, path: str, mode: int) -> None:
        """``os.chmod`` (follows symlinks): copies up even when the mode does not change."""
        found = self._walk(path, follow=True)
        if found.entry is None:
            raise _error(errno.ENOENT, path)
        if not found.path:
            raise UnmodelledError("the merged root's attributes are not modelled")
        self._copy_up(found.path)
        node = self._upper.node(found.path)
        if isinstance(node, Dir):
            self._upper.set(found.path, Dir(mode & 0o7777, opaque=node.opaque))
        else:
            assert isinstance(node, _Inode)
            assert isinstance(node.entry, File)
            node.entry = File(node.entry.data, mode & 0o7777)

    def link(self, src: str, dst: str) -> None:
        """``os.link(src, dst, follow_symlinks=False)`` (what link(2) does on Linux).

        A lower *src* is copied up first and *dst* links to the copy; with ``index=off``
        that breaks any hard link *src* had in its lower layer.
        """
        old = self._walk(src, follow=False)
        if old.entry is None:
            raise _error(errno.ENOENT, src, dst)
        new = self._walk(dst, follow=False)
        if new.entry is not None:
            raise _error(errno.EEXIST, src, dst)
        if isinstance(old.entry, Dir):
            raise _error(errno.EPERM, src, dst)
        self._create(new.path, self._copy_up_inode(old.path))

    # -- internals ---------------------------------------------------------------------

    def _open_for_write(self, path: str, data: bytes, *, truncate: bool) -> None:
        found = self._walk(path, follow=True)
        if found.entry is None:
            self._create(found.path, _Inode(File(data, 0o666 & ~self.umask)))
            return
        if isinstance(found.entry, Dir):
            raise _error(errno.EISDIR, path)
        # Opening for write copies up even if nothing is written.
        inode = self._copy_up_inode(found.path)
        old = inode.entry
        assert isinstance(old, File)
        inode.entry = File((b"" if truncate else old.data) + data, old.mode)

    def _walk(self, path: str, *, follow: bool) -> _Found:
        """Resolve *path* like the kernel's path walk.

        Symlinks before the last component are always followed, the last one only when
        *follow* is true. A missing last component is fine (creation); a missing or
        non-directory intermediate one is ENOENT or ENOTDIR.
        """
        pending = check_path(path).split("/")
        pending.reverse()
        here: list[str] = []
        stack = self._view.root()
        followed = 0
        while pending:
            name = pending.pop()
            last = not pending
            if name in ("", "."):
                if last:
                    return self._found_dir(here, stack)
                continue
            if name == "..":
                if not here:
                    raise UnmodelledError(f"{path!r} leads out of the tree through a symlink")
                here.pop()
                parent_stack = self._view.stack("/".join(here))
                assert parent_stack is not None
                stack = parent_stack
                if last:
                    return self._found_dir(here, stack)
                continue
            child_path = join("/".join(here), name)
            child = self._view.child(stack, child_path)
            if child is None:
                if last:
                    return _Found(child_path, None, None)
                raise _error(errno.ENOENT, path)
            entry = self._view.entry(child, child_path)
            if isinstance(entry, Symlink) and (follow or not last):
                followed += 1
                if followed > MAXSYMLINKS:
                    raise _error(errno.ELOOP, path)
                if entry.target.startswith("/"):
                    raise UnmodelledError(f"{path!r} follows the absolute symlink {child_path!r}")
                # The target is relative to the directory holding the link: ``here``.
                pending.extend(reversed(entry.target.split("/")))
                continue
            if last:
                return _Found(child_path, child, entry)
            if not isinstance(entry, Dir):
                raise _error(errno.ENOTDIR, path)
            here.append(name)
            stack = child
        raise AssertionError("unreachable: a checked path has at least one component")

    def _found_dir(self, here: list[str], stack: Stack) -> _Found:
        path = "/".join(here)
        return _Found(path, stack, self._view.entry(stack, path) if path else _ROOT)

    def _mark_opaque_if_merged_parent(self, path: str, new_parent: str) -> None:
        """ovl_rename: a directory arriving in a merged directory is made opaque, so that
        no lower directory of its new name can show through it."""
        node = self._upper.node(path)
        assert isinstance(node, Dir), path
        if not node.opaque and self._is_merged_dir(new_parent):
            self._upper.set(path, Dir(node.mode, opaque=True))

    def _is_merged_dir(self, path: str) -> bool:
        """Whether directory *path* has an upper part and a lower part (``ovl_type_merge``)."""
        stack = self._view.stack(path)
        return stack is not None and stack[0] == 0 and len(stack) > 1

    def _lower_positive(self, path: str) -> bool:
        """Whether a lower layer shows *path*: then deleting it needs a whiteout."""
        parent = self._view.stack(parent_of(path))
        assert parent is not None
        lowers = tuple(index for index in parent if index != 0)
        return self._view.child(lowers, path) is not None

    def _copy_up(self, path: str) -> None:
        """Give the visible *path* an upper entry, copying up its parents first."""
        stack = self._view.stack(path)
        assert stack is not None, path
        if stack[0] == 0:
            return
        self._copy_up_parents(path)
        entry = self._view.entry(stack, path)
        if isinstance(entry, Dir):
            # Opaque is overlay's private xattr: copy-up never carries it.
            self._upper.set(path, Dir(entry.mode))
        else:
            assert isinstance(entry, (File, Symlink))
            self._upper.set(path, _Inode(entry, origin_name=path))

    def _copy_up_inode(self, path: str) -> _Inode:
        self._copy_up(path)
        node = self._upper.node(path)
        assert isinstance(node, _Inode)
        return node

    def _copy_up_parents(self, path: str) -> None:
        parent = parent_of(path)
        if parent:
            self._copy_up(parent)

    def _create(self, path: str, node: _Node) -> None:
        """Add *node* at the free name *path*, replacing an upper whiteout if there is one."""
        self._copy_up_parents(path)
        self._upper.set(path, node)

    def _remove(self, path: str) -> None:
        leave_whiteout = self._lower_positive(path)
        self._copy_up_parents(path)
        _forget_names(path, self._upper.remove(path))
        if leave_whiteout:
            self._upper.set(path, WHITEOUT)
