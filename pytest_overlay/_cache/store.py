"""The on-disk store of built layers: lookup with verification, atomic publish, locks, LRU.

Layout of a cache directory (mode 0700, owned by the user)::

    entries/<key>/layer/      the built layer, used read-only as a lower layer
    entries/<key>/meta.json   what was stored: key, digest of layer/, size, files, fixture
    entries/<key>/hits        one byte appended per use: its size counts hits, its mtime
                              is the last use (what least-recently-used eviction reads)
    tmp/<key>.<pid>.<rand>/   an entry being built or imported; renamed into entries/
    locks/<key>.build         flock, exclusive while one process looks up or builds <key>
    locks/<key>.use           flock, shared while a session mounts the entry; eviction
                              and clearing take it exclusively and skip entries in use

An entry exists only once renamed into ``entries/``, after its layer was copied and its
digest written, so a build killed at any point leaves at most a ``tmp/`` directory, which
the next builder of that key removes. A lookup recomputes the digest of ``layer/`` and
refuses the entry (and removes it) if it differs, if ``meta.json`` names another key or
format, or if anything in it belongs to another user.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, final

from pytest_overlay._errors import OverlayError
from pytest_overlay._layers.copytree import copy_layer
from pytest_overlay._layers.digest import tree_digest
from pytest_overlay._linux.workspace import remove_workspace

__all__ = ["FORMAT", "CacheStore", "Entry"]

#: Bumped whenever the layout or the meaning of a key changes: old entries then miss.
FORMAT: Final = 1

_FLAGS: Final = os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_CREAT


@dataclass(frozen=True)
class Entry:
    """One published entry, as ``--overlay-cache-info`` lists it."""

    key: str
    path: Path
    fixture: str
    size: int
    files: int
    created: float
    last_used: float
    hits: int

    @property
    def layer(self) -> Path:
        return self.path / "layer"


def _check_owner(path: Path, st: os.stat_result) -> None:
    if st.st_uid != os.geteuid():
        raise OverlayError(
            f"the build cache directory {path} belongs to uid {st.st_uid}, not to this user "
            f"(uid {os.geteuid()}); a cache shared between users could hand one user's "
            "layers to another: set overlay_cache_dir to a directory of your own"
        )


@final
class CacheStore:
    """A cache directory of built layers (created 0700 if missing)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        try:
            root.mkdir(mode=0o700, parents=True, exist_ok=True)
            st = os.lstat(root)
        except OSError as exc:
            raise OverlayError(
                f"cannot create the build cache directory {root}: {exc.strerror}; set "
                "overlay_cache_dir to a writable directory"
            ) from None
        if not stat.S_ISDIR(st.st_mode):
            raise OverlayError(
                f"the build cache directory {root} is not a directory: remove it or set "
                "overlay_cache_dir elsewhere"
            )
        _check_owner(root, st)
        if stat.S_IMODE(st.st_mode) != 0o700:
            # Entries are mounted as they are: nobody else may change them, or read them.
            os.chmod(root, 0o700)
        for sub in ("entries", "tmp", "locks"):
            (root / sub).mkdir(mode=0o700, exist_ok=True)

    # --- locks -----------------------------------------------------------------------------

    def _lock(self, key: str, kind: str, how: int) -> int:
        fd = os.open(self.root / "locks" / f"{key}.{kind}", _FLAGS, 0o600)
        try:
            fcntl.flock(fd, how)
        except BaseException:
            os.close(fd)
            raise
        return fd

    @contextlib.contextmanager
    def building(self, key: str, *, sweep: bool = True) -> Iterator[None]:
        """Hold the build lock of *key*: other processes wait here until it is released.

        xdist workers and concurrent sessions that need the same key queue on it; the
        first builds and publishes, the others then find the entry.
        """
        fd = self._lock(key, "build", fcntl.LOCK_EX)
        try:
            # What a killed builder of this key left: nobody else builds it now.
            for leftover in (self.root / "tmp").glob(f"{key}.*") if sweep else ():
                with contextlib.suppress(OSError):
                    remove_workspace(leftover)
            yield
        finally:
            os.close(fd)

    def use(self, key: str) -> int:
        """A shared lock that keeps *key* from being evicted; close the fd to release it."""
        return self._lock(key, "use", fcntl.LOCK_SH)

    # --- lookup and publish ---------------------------------------------------------------

    def lookup(self, key: str) -> tuple[Entry | None, str]:
        """The verified entry of *key*, or None and why it was refused (or "" if absent).

        A refused entry is removed, so that the caller's rebuild can take its place.
        """
        path = self.root / "entries" / key
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None, ""
        why = self._refusal(key, path, st)
        if why:
            try:
                self._remove(path)
            except OverlayError as exc:
                why += f"; {exc}"
            return None, why
        entry = self._entry(key, path)
        with open(path / "hits", "ab") as hits:
            hits.write(b".")
        return entry, ""

    def _refusal(self, key: str, path: Path, st: os.stat_result) -> str:
        if not stat.S_ISDIR(st.st_mode):
            return "not a directory"
        if st.st_uid != os.geteuid():
            return f"owned by uid {st.st_uid}, not by this user"
        try:
            meta = json.loads((path / "meta.json").read_text())
            layer_st = os.lstat(path / "layer")
        except (OSError, ValueError) as exc:
            return f"unreadable ({exc})"
        if layer_st.st_uid != os.geteuid():
            return f"its layer is owned by uid {layer_st.st_uid}, not by this user"
        if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("key") != key:
            return "its meta.json is for another key or cache format"
        try:
            actual = tree_digest(path / "layer")
        except OSError as exc:
            return f"its layer cannot be read ({exc.strerror})"
        if actual != meta.get("digest"):
            return "its layer does not match its digest (changed or damaged since it was stored)"
        return ""

    def publish(self, key: str, layer: Path | None, fixture: str, seconds: float) -> Entry:
        """Copy *layer* (None: the build changed nothing) into the cache as *key*'s entry.

        Call with :meth:`building` held. The copy goes to ``tmp/`` first and is renamed
        into place only once complete and digested: readers see the whole entry or none.
        """
        staging = self.root / "tmp" / f"{key}.{os.getpid()}.{secrets.token_hex(4)}"
        try:
            staging.mkdir(mode=0o700)
            if layer is None:
                (staging / "layer").mkdir(mode=0o755)
            else:
                skipped = copy_layer(layer, staging / "layer")
                if skipped:
                    raise OverlayError(
                        f"the build left entries that cannot be stored in the cache: "
                        f"{'; '.join(skipped[:3])}"
                    )
            self._write_meta(staging, key, fixture, seconds)
            target = self.root / "entries" / key
            if target.exists():
                # Refused by lookup but not removable, or published by an importer.
                self._remove(target)
            os.rename(staging, target)
        except BaseException:
            with contextlib.suppress(OSError):
                remove_workspace(staging)
            raise
        return self._entry(key, target)

    def _write_meta(self, staging: Path, key: str, fixture: str, seconds: float) -> None:
        size, files = _measure(staging / "layer")
        meta = {
            "format": FORMAT,
            "key": key,
            "digest": tree_digest(staging / "layer"),
            "fixture": fixture,
            "size": size,
            "files": files,
            "created": time.time(),
            "build_seconds": round(seconds, 3),
        }
        (staging / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
        (staging / "hits").write_bytes(b"")

    def adopt(self, key: str, staging: Path, fixture: str) -> Entry:
        """Publish a layer already written to *staging*/layer (an import), atomically."""
        with self.building(key, sweep=False):  # the staging directory is named by the key
            target = self.root / "entries" / key
            self._write_meta(staging, key, fixture, 0.0)
            if target.exists():
                self._remove(target)
            os.rename(staging, target)
            return self._entry(key, target)

    def staging(self, key: str) -> Path:
        path = self.root / "tmp" / f"{key}.{os.getpid()}.{secrets.token_hex(4)}"
        path.mkdir(mode=0o700)
        return path

    # --- housekeeping ---------------------------------------------------------------------

    def entries(self) -> list[Entry]:
        """Every published entry, least recently used first (nothing is verified here)."""
        found: list[Entry] = []
        with contextlib.suppress(FileNotFoundError), os.scandir(self.root / "entries") as scan:
            for item in scan:
                with contextlib.suppress(OSError, ValueError):
                    found.append(self._entry(item.name, Path(item.path)))
        return sorted(found, key=lambda e: e.last_used)

    def evict(self, max_size: int, keep: str = "") -> list[Entry]:
        """Remove least recently used entries until the total is at most *max_size*.

        Entries in use by any session (their use lock is held) and *keep* are skipped.
        """
        entries = self.entries()
        total = sum(e.size for e in entries)
        removed: list[Entry] = []
        for entry in entries:
            if total <= max_size:
                break
            if entry.key != keep and self._remove_unused(entry):
                total -= entry.size
                removed.append(entry)
        return removed

    def clear(self) -> tuple[list[Entry], list[Entry]]:
        """Remove every entry not in use: (removed, kept because in use)."""
        removed: list[Entry] = []
        busy: list[Entry] = []
        for entry in self.entries():
            (removed if self._remove_unused(entry) else busy).append(entry)
        return removed, busy

    def _remove_unused(self, entry: Entry) -> bool:
        try:
            fd = self._lock(entry.key, "use", fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return False
            raise
        try:
            self._remove(entry.path)
        except OverlayError:
            return False  # another user's: listed as kept, like an entry in use
        finally:
            os.close(fd)
        return True

    def _remove(self, path: Path) -> None:
        # Out of entries/ first, in one rename: a reader never sees half an entry.
        doomed = self.root / "tmp" / f"removed.{path.name}.{secrets.token_hex(4)}"
        try:
            os.rename(path, doomed)
        except FileNotFoundError:
            return
        except PermissionError:
            # Moving a directory to another parent rewrites its "..": its owner's right.
            raise OverlayError(
                f"{path} belongs to another user and cannot be removed by this one: remove "
                "it as its owner (or as root), or set overlay_cache_dir elsewhere"
            ) from None
        # An entry of another user's may not be deletable by this one: out of entries/ is
        # what matters, the rest stays in tmp/ for whoever can remove it.
        with contextlib.suppress(OSError):
            remove_workspace(doomed)

    def _entry(self, key: str, path: Path) -> Entry:
        meta = json.loads((path / "meta.json").read_text())
        hits = os.lstat(path / "hits")
        return Entry(
            key=key,
            path=path,
            fixture=str(meta.get("fixture", "?")),
            size=int(meta.get("size", 0)),
            files=int(meta.get("files", 0)),
            created=float(meta.get("created", 0.0)),
            last_used=max(hits.st_mtime, float(meta.get("created", 0.0))),
            hits=hits.st_size,
        )


def _measure(root: Path) -> tuple[int, int]:
    """Bytes of data (as allocated) and number of entries under *root*."""
    size = files = 0
    for directory, dirs, names in os.walk(root):
        for name in (*dirs, *names):
            st = os.lstat(os.path.join(directory, name))
            size += st.st_blocks * 512
            files += 1
    return size, files
