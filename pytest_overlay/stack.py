"""OverlayStack: one union of read-only lower layers under a throwaway upper layer."""

from __future__ import annotations

import errno
import itertools
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import final

from pytest_overlay import _errors
from pytest_overlay._backends import ladder as _backends
from pytest_overlay._backends.protocol import Backend, RestoresInPlace, SyncsUpper
from pytest_overlay._chain import (
    FrozenLayer,
    Layer,
    WorkspaceKeeper,
    chain_paths,
    common_suffix,
    freeze_upper,
    fresh_upper,
    is_empty_upper,
    layer_path,
    root_attributes,
    squash_top,
)
from pytest_overlay._errors import OverlayError, layer_list
from pytest_overlay._layers import statediff as _statediff
from pytest_overlay._layers.changes import Change
from pytest_overlay._linux import busy as _busy
from pytest_overlay._linux.covered import Covered
from pytest_overlay._linux.fakefs import check_real_filesystem
from pytest_overlay._linux.mount import MAX_LOWER_LAYERS
from pytest_overlay._linux.pseudofs import pseudo_filesystem
from pytest_overlay._linux.workspace import Workspace, create_workspace, remove_workspace
from pytest_overlay.snapshot import Snapshot, chain_of, make_snapshot

__all__ = ["OverlayStack"]

LayerLike = str | os.PathLike[str]
#: One base of a stack: a directory, or a snapshot (standing for its layers).
BaseLike = LayerLike | Snapshot


#: Bounds the caches below: a session mounts a handful of bases, a long run maybe more.
_CACHE_LIMIT = 4096

# Layer as given (an absolute path) -> (the checked directory, its (st_dev, st_ino)).
# Checking a layer resolves every component, then stats and statfs's the directory: per
# mount, per layer, for the same few bases all session. While the path still leads to
# the same directory (one stat says so), the answer is the same.
_checked_lowers: dict[str, tuple[Path, tuple[int, int]]] = {}


def _check_lower(raw: LayerLike) -> Path:
    key = os.fspath(raw)
    cached = _checked_lowers.get(key)
    if cached is not None:
        try:
            st = os.stat(key)
        except OSError:
            pass  # gone since: the full check below says how
        else:
            if (st.st_dev, st.st_ino) == cached[1]:
                return cached[0]
    resolved = _check_lower_uncached(raw)
    if os.path.isabs(key):  # a relative path depends on the working directory
        if len(_checked_lowers) >= _CACHE_LIMIT:
            _checked_lowers.clear()
        st = os.stat(resolved)
        _checked_lowers[key] = (resolved, (st.st_dev, st.st_ino))
    return resolved


def _check_lower_uncached(raw: LayerLike) -> Path:
    path = Path(raw)
    try:
        resolved = path.resolve(strict=True)
    except FileNotFoundError:
        raise OverlayError(
            f"lower layer {str(raw)!r} does not exist: create it, or fix the path "
            f"(relative paths resolve against {os.getcwd()})"
        ) from None
    except (RuntimeError, OSError) as exc:
        # Python < 3.13 reports a symlink loop as RuntimeError, later ones as ELOOP.
        if isinstance(exc, RuntimeError) or exc.errno == errno.ELOOP:
            raise OverlayError(
                f"lower layer {str(raw)!r} is a symlink loop: point it at a directory"
            ) from None
        raise OverlayError(f"lower layer {str(raw)!r} cannot be read: {exc.strerror}") from None
    if not resolved.is_dir():
        raise OverlayError(
            f"lower layer {str(raw)!r} is not a directory: a layer is a directory tree"
        )
    if resolved == Path(resolved.anchor):
        # It holds pytest's own workspace, /proc and /sys, and a copy would take it all.
        raise OverlayError(
            f"lower layer {str(raw)!r} is the root of the filesystem: use a directory that "
            "holds just the files the test needs (a copy of them, or a subdirectory)"
        )
    kind = pseudo_filesystem(resolved)
    if kind is not None:
        raise OverlayError(
            f"lower layer {str(raw)!r} is on {kind}, a pseudo filesystem whose files the "
            "kernel makes up as they are read, which no backend can use as a layer: copy "
            "the files the test needs into a directory and use that"
        )
    return resolved


def _count_layers(lowers: Sequence[BaseLike]) -> int:
    return sum(len(chain_of(item)) if isinstance(item, Snapshot) else 1 for item in lowers)


#: The opaque marker each backend's mount reads, for the backends whose deep snapshot
#: chains are squashed. fuse-overlayfs also drops marker files into opaque directories,
#: and the copy backend, and backends from other plugins, keep their chains as they are.
_SQUASH_OPAQUE_XATTR = {"kernel": "trusted.overlay.opaque", "userns": "user.overlay.opaque"}


def _check_count(count: int) -> None:
    # The kernel's limit, applied to every backend (fuse-overlayfs and the copy would take
    # more), so that a suite does not depend on the machine that runs it.
    if count > MAX_LOWER_LAYERS:
        raise OverlayError(
            f"{count} lower layers given, but overlayfs stacks at most {MAX_LOWER_LAYERS}: "
            "merge some layers first (for example by taking a snapshot)"
        )


def _expand(lowers: Sequence[BaseLike]) -> tuple[Layer, ...]:
    # Counted before any path is resolved: too many layers is refused before any work.
    _check_count(_count_layers(lowers))
    chain: list[Layer] = []
    for item in lowers:
        if isinstance(item, Snapshot):
            chain.extend(chain_of(item))
        else:
            chain.append(_check_lower(item))
    return tuple(chain)


# (layers, workspace as resolved) that passed _check_layout: the check depends on nothing
# else, and a stack of 100 layers is checked again on every mount otherwise.
_layouts_ok: set[tuple[tuple[Path, ...], Path, bool]] = set()
# Workspace as given -> (its real path, (st_dev, st_ino)), confirmed by one stat.
_workspaces: dict[str, tuple[Path, tuple[int, int]]] = {}


def _resolved_workspace(workspace: Path | None) -> Path:
    key = tempfile.gettempdir() if workspace is None else os.fspath(workspace)
    try:
        st = os.stat(key)
    except OSError:
        return Path(key).resolve()  # not made yet: resolve what exists of it
    cached = _workspaces.get(key)
    if cached is not None and cached[1] == (st.st_dev, st.st_ino):
        return cached[0]
    resolved = Path(key).resolve()
    if len(_workspaces) >= _CACHE_LIMIT:
        _workspaces.clear()
    _workspaces[key] = (resolved, (st.st_dev, st.st_ino))
    return resolved


def _check_layout(lowers: Sequence[Path], workspace: Path | None) -> None:
    """Refuse a layer given twice, nested layers, and a workspace inside a layer.

    O(n log n) in the number of layers: a stack may have 500. Once per session for
    each base and workspace (the layers are resolved paths already).
    """
    resolved = _resolved_workspace(workspace)
    key = (tuple(lowers), resolved, workspace is None)
    if key in _layouts_ok:
        return
    _check_layout_uncached(lowers, workspace, resolved)
    if len(_layouts_ok) >= _CACHE_LIMIT:
        _layouts_ok.clear()
    _layouts_ok.add(key)


def _check_layout_uncached(lowers: Sequence[Path], workspace: Path | None, resolved: Path) -> None:
    seen: dict[Path, int] = {}
    for index, lower in enumerate(lowers):
        if lower in seen:
            raise OverlayError(
                f"lower layer {lower} is given twice (positions {seen[lower]} and {index}): "
                "list each layer once"
            )
        seen[lower] = index
    # Sorted by their components, a directory comes right before the first path inside
    # it (anything between them would be inside it too), so neighbours are enough.
    ordered = sorted(lowers, key=lambda p: p.parts)
    for outer, inner in itertools.pairwise(ordered):
        if inner.parts[: len(outer.parts)] == outer.parts:
            raise OverlayError(
                f"lower layer {inner} lies inside lower layer {outer}: layers must be "
                "disjoint directories"
            )
    # The default workspace is checked as well as an explicit one: TMPDIR inside the
    # base would put the upper layer there (and the copy backend would copy its own copy).
    for directory in (resolved, *resolved.parents):
        if directory not in seen:
            continue
        if workspace is None:
            raise OverlayError(
                f"the temporary directory {resolved} (TMPDIR) lies inside lower layer "
                f"{directory}: the upper layer would write into the base; set TMPDIR to a "
                "directory outside it, or pass workspace= a directory outside it"
            )
        raise OverlayError(
            f"the workspace {resolved} lies inside lower layer {directory}: the upper "
            "layer would write into the base; choose a workspace outside it"
        )


def _check_target(target: Path, base: Sequence[Layer]) -> tuple[Path, bool]:
    """The absolute *target* for ``merged=``, and whether it is a base directory itself.

    Refused where a mount there hides a layer it does not stand on: a directory inside a
    layer or holding one. A target that *is* a base directory gets the union over itself.
    """
    resolved = target.resolve()
    paths = chain_paths(base)
    if any(isinstance(layer, Path) and layer == resolved for layer in base):
        for lower in paths:
            if lower != resolved and (
                resolved.is_relative_to(lower) or lower.is_relative_to(resolved)
            ):
                raise OverlayError(
                    f"cannot show the union over {target} itself: it overlaps lower layer "
                    f"{lower}, which the union would hide; mount one union per directory"
                )
        return resolved, True
    for lower in paths:
        if resolved.is_relative_to(lower) or lower.is_relative_to(resolved):
            raise OverlayError(
                f"cannot show the union at {target}: it overlaps lower layer {lower}, which "
                "the union would hide or write into; choose a directory outside the base"
            )
    return resolved, False


@final
class OverlayStack:
    """A union of read-only *lowers* (top-most first, like ``lowerdir``) and a fresh upper.

    Use it as a context manager, or call :meth:`mount` and :meth:`close`. Everything
    written under :attr:`merged` lands in :attr:`upper`; the lowers are never modified.
    Closing unmounts the union and deletes the upper layer, work and merged directories.
    A lower may be a :class:`~pytest_overlay.Snapshot`, which stands for its layers;
    :meth:`snapshot` and :meth:`restore` freeze the current state and roll back to one.

    *workspace* is the directory under which a fresh ``stack-*`` directory is created per
    mount (default: a new temporary directory). *backend* is ``"auto"`` (the best that
    works here), a backend name (``"kernel"``, ``"userns"``, ``"fuse"``, ``"copy"``) or a
    backend object. *merged* is where the union shows (default: ``merged`` inside the
    workspace): a new or empty directory outside the lowers, made on mount if missing and
    left empty at close; or one of the lower directories itself, which then shows the
    union at its own path (its real contents stay untouched underneath, and show again
    at close). This needs a mounting backend: the copy backend refuses it.
    """

    def __init__(
        self,
        lowers: Sequence[BaseLike],
        *,
        workspace: LayerLike | None = None,
        backend: str | Backend = "auto",
        name: str = "stack",
        merged: LayerLike | None = None,
    ) -> None:
        if isinstance(lowers, (str, os.PathLike)):
            raise TypeError(
                "OverlayStack takes a sequence of lower layers: write OverlayStack([path])"
            )
        if not lowers:
            raise OverlayError("an overlay needs at least one lower layer")
        check_real_filesystem()
        self._base = _expand(lowers)
        self._workspace_parent = Path(workspace) if workspace is not None else None
        _check_layout(chain_paths(self._base), self._workspace_parent)
        self._target: Path | None = None
        #: True when the union is shown over its own lower directory (merged= a lower).
        self.in_place = False
        if merged is not None:
            self._target, self.in_place = _check_target(Path(merged), self._base)
        # While mounted in place: the covered lower directory, still reachable.
        self._covered: Covered | None = None
        self._requested = backend
        self._name = name
        self._space: Workspace | None = None
        self._backend: Backend | None = None
        # Snapshot state of the current mount: the layers under the upper, top-most
        # first (the base, with frozen layers on top after snapshots), the owner of the
        # workspace, the base as a Snapshot, and the upper root as it was made.
        self._chain: tuple[Layer, ...] = self._base
        self._keeper: WorkspaceKeeper | None = None
        self._origin: Snapshot | None = None
        self._frozen = 0
        self._taken = 0
        self._upper_attributes: tuple[object, ...] = ()
        #: False if the last :meth:`close` found the union busy (a process still had a
        #: file open or its working directory inside ``merged``) and detached it lazily:
        #: the kernel frees it when the last user lets go, and an OverlayWarning names them.
        self.clean_unmount = True
        #: The process's working directory when the union was mounted.
        self._cwd: str | None = None

    def __repr__(self) -> str:
        state = f"mounted at {self._space.merged}" if self._space else "not mounted"
        return f"<OverlayStack {layer_list(self.lowers)} {state}>"

    @property
    def lowers(self) -> tuple[Path, ...]:
        """The read-only layers under :attr:`upper`, top-most first.

        The base layers; after :meth:`snapshot` the frozen layers come first, and after
        :meth:`restore` they are the snapshot's :attr:`~pytest_overlay.Snapshot.layers`.
        """
        return chain_paths(self._chain)

    @property
    def mounted(self) -> bool:
        """Whether the union is mounted now: from :meth:`mount` (or ``with``) until
        :meth:`close`. A fixture's stack is mounted for the whole test."""
        return self._space is not None

    def _require(self) -> Workspace:
        if self._space is None:
            raise OverlayError(
                "this OverlayStack is not mounted: use 'with OverlayStack(...) as stack:' "
                "or call stack.mount() first"
            )
        return self._space

    @property
    def merged(self) -> Path:
        """The union: the lowers as seen through the upper layer. Read and write here."""
        return self._require().merged

    @property
    def upper(self) -> Path:
        """The writable layer that receives every change made under :attr:`merged`.

        The path stays the same across :meth:`snapshot` and :meth:`restore`, but each
        gives it a fresh, empty directory. On a backend that writes its upper layer on
        request (copy), reading this property brings it up to date first.
        """
        space = self._require()
        # Typed as object: mypy takes the two protocols for disjoint types.
        backend: object = self._backend
        if isinstance(backend, SyncsUpper):
            backend.sync_upper(self.lowers, space)
        return space.upper

    @property
    def work(self) -> Path:
        """Overlayfs's private scratch directory (same filesystem as :attr:`upper`)."""
        return self._require().work

    @property
    def workspace(self) -> Path:
        """The directory holding ``upper``, ``work`` and ``merged`` for this mount."""
        return self._require().root

    @property
    def backend(self) -> str:
        """Short name of the mechanism that mounted the union, e.g. ``"kernel"``."""
        if self._backend is None:
            return _backends.select_backend(self._requested).name
        return self._backend.name

    def mount(self) -> OverlayStack:
        """Create a fresh workspace and mount the union on it; return self."""
        if self._space is not None:
            raise OverlayError(f"{self!r} is already mounted: close it before mounting again")
        check_real_filesystem()
        backend = _backends.select_backend(self._requested)
        if self.in_place and "not-a-mount-point" in backend.deviations:
            raise _errors.BackendUnavailable(
                f"the {backend.name} backend cannot show a union over {self._target} itself: "
                "it makes a copy, not a mount, and the path would still be the real "
                "directory; use the kernel backend (root), userns (an ordinary user where "
                "user namespaces are allowed) or fuse (fuse-overlayfs)"
            )
        self._chain = self._base
        space = create_workspace(self._workspace_parent, self.lowers[0], prefix=self._name)
        attributes = root_attributes(space.upper)
        covered = Covered(self._target) if self.in_place and self._target else None
        self._covered = covered
        try:
            if self._target is not None:
                space = self._show_at_target(space)
            backend.mount(self._real(self.lowers), space)
        except BaseException:
            self._covered = None
            if covered is not None:
                covered.close()
            remove_workspace(space.root)
            raise
        self._space, self._backend = space, backend
        self._cwd = _getcwd()
        if covered is not None:
            # A working directory inside the path still points at the covered directory:
            # enter the path again, onto the union.
            inside = covered.cwd_inside()
            if inside is not None:
                covered.enter(inside)
        self._keeper = WorkspaceKeeper(space.root)
        self._origin = make_snapshot(self._base, None, "base", self)
        self._frozen = self._taken = 0
        self._upper_attributes = attributes
        return self

    def close(self, *, keep_upper: str | os.PathLike[str] | None = None) -> None:
        """Unmount the union and delete its workspace. Safe to call more than once.

        Frozen layers that a :class:`~pytest_overlay.Snapshot` (or a stack built on one)
        still refers to stay on disk until the last such reference is gone. With
        *keep_upper*, the upper layer (what changed since the last snapshot) is moved to
        that new path instead of being deleted, for inspection.
        """
        space, self._space = self._space, None
        if space is None:
            return
        assert self._backend is not None
        # A working directory inside merged keeps the mount busy, and once the union is
        # gone the process's os.getcwd() fails: move it back to where it was at mount.
        # In place, it moves to the same path in the real directory instead.
        inside = self._covered.cwd_inside() if self._covered is not None else None
        if inside is not None and self._covered is not None:
            self._covered.step_under(inside)
        else:
            _leave(space.merged, self._cwd)
        self.clean_unmount = self._backend.unmount(space)
        problems: list[str] = []
        if not self.clean_unmount:
            problems.append(_detached_message(space.merged, _busy.detached_holders(space.merged)))
        if keep_upper is not None:
            skipped = _keep_layer(space.upper, Path(keep_upper))
            if skipped:
                problems.append(_skipped_message(Path(keep_upper), skipped))
        self._release(space)
        # Warned last, after everything is cleaned up: "-W error" makes this raise. The
        # category is looked up only here: defining it imports pytest.
        for problem in problems:
            warnings.warn(problem, _errors.OverlayWarning, stacklevel=2)

    def _show_at_target(self, space: Workspace) -> Workspace:
        """*space* with the union shown at the requested ``merged`` directory instead.

        The workspace keeps its own empty ``merged``, so its layout stays what the
        start-up sweep expects of a workspace.
        """
        assert self._target is not None
        target = self._target
        try:
            target.mkdir(parents=True)
        except FileExistsError:
            if self.in_place:
                return Workspace(space.root, space.upper, space.work, target)
            if not target.is_dir() or target.is_symlink() or any(target.iterdir()):
                raise OverlayError(
                    f"cannot show the union at {target}: it exists and is not an empty "
                    "directory; pass merged= a new or empty directory"
                ) from None
        return Workspace(space.root, space.upper, space.work, target)

    def _release(self, space: Workspace) -> None:
        """Forget the (unmounted) workspace; delete it unless snapshots still use it."""
        self._space = None
        covered, self._covered = self._covered, None
        if covered is not None:
            covered.close()
        keeper, self._keeper = self._keeper, None
        self._chain, self._origin = self._base, None
        if keeper is None:  # pragma: no cover - mounted stacks always have one
            remove_workspace(space.root)
        elif self._frozen == 0:
            # Every caller has unmounted (or detached) the union, or never mounted it.
            keeper.remove_unmounted()
        else:
            # Frozen layers live on while a Snapshot (or a stack mounted on one) refers
            # to them; the keeper deletes the rest of the workspace after the last.
            remove_workspace(space.upper)
            remove_workspace(space.work)

    def __enter__(self) -> OverlayStack:
        return self.mount() if self._space is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def changes(self) -> list[Change]:
        """What the upper layer changes relative to the lowers, parents before children."""
        space = self._require()
        assert self._backend is not None
        return self._backend.changes(self._real(self.lowers), space)

    def _real(self, paths: Sequence[Path]) -> tuple[Path, ...]:
        """*paths* with the directory under the union, when it is shown in place, named by
        a path that reaches the real directory rather than the union over it."""
        covered = self._covered
        if covered is None:
            return tuple(paths)
        return tuple(covered.underneath if p == covered.path else p for p in paths)

    # --- snapshots ------------------------------------------------------------------------

    @property
    def base(self) -> Snapshot:
        """The state this mount started from (its base layers), as a :class:`Snapshot`.

        :meth:`restore` it to discard everything since mounting; :meth:`diff` compares
        with it by default.
        """
        self._require()
        assert self._origin is not None
        return self._origin

    def snapshot(self, name: str | None = None) -> Snapshot:
        """Freeze the current merged state into a new read-only layer and return it.

        The union is unmounted, its upper layer becomes the top-most lower layer, and it
        is mounted again at the same :attr:`merged` path over a fresh, empty upper. Nothing
        is copied, so the cost does not depend on the size of the base. If nothing changed
        since the last snapshot (or mount, or restore), no layer is added and the snapshot
        shares its layers with that state.

        Raises :class:`~pytest_overlay.OverlayError`, changing nothing, while a file under
        :attr:`merged` is open, mapped, or some process's working directory.
        """
        space = self._require()
        assert self._keeper is not None
        if len(self._chain) >= MAX_LOWER_LAYERS:
            raise OverlayError(
                f"this stack already stands on {len(self._chain)} layers, and overlayfs stacks "
                f"at most {MAX_LOWER_LAYERS}: restore an earlier snapshot, or build the "
                "state again on a fresh stack"
            )
        inside = self._step_out()
        _busy.check_idle(space.merged, "take a snapshot of", self.in_place)
        self._unmount_for(space, "take a snapshot")
        own: FrozenLayer | None = None
        if is_empty_upper(space.upper, self._upper_attributes):
            remove_workspace(space.upper)
        else:
            self._frozen += 1
            own = freeze_upper(space, self._keeper, self._frozen)
        # The layers under the new one are squashed once enough have piled up; the new
        # layer stays on top as it is, for snapshot.changes(). The snapshot stands on the
        # same chain as the stack goes on with, so restoring it keeps the chain as short
        # (a snapshot on the unsquashed chain would make every restore undo the squash).
        try:
            below = self._squashed(self._chain)
        except BaseException:
            # Whatever stopped the squash, the union must not stay unmounted: it goes on
            # over the unsquashed layers (the same view, only deeper) before the error shows.
            self._remount(space, self._chain if own is None else (own, *self._chain))
            self._step_in(inside)
            raise
        chain = below if own is None else (own, *below)
        snapshot = make_snapshot(chain, own, name or f"snapshot-{self._taken + 1}", self)
        self._remount(space, chain)
        self._step_in(inside)
        self._taken += 1
        return snapshot

    def _squashed(self, chain: tuple[Layer, ...]) -> tuple[Layer, ...]:
        assert self._backend is not None
        assert self._keeper is not None
        opaque = _SQUASH_OPAQUE_XATTR.get(self._backend.name)
        if opaque is None:
            return chain

        def number() -> int:
            self._frozen += 1
            return self._frozen

        return squash_top(chain, len(chain) - len(self._base), self._keeper, number, opaque)

    def restore(self, snapshot: Snapshot) -> None:
        """Roll the merged view back to *snapshot*, discarding everything written since.

        The union is mounted again at the same :attr:`merged` path, on the snapshot's
        layers with a fresh, empty upper. Any snapshot taken on this stack's base can be
        restored, in any order: later snapshots stay valid. Raises
        :class:`~pytest_overlay.OverlayError`, changing nothing, while a file under
        :attr:`merged` is open, mapped, or some process's working directory.
        """
        space = self._require()
        target = chain_of(snapshot)
        base = chain_paths(self._base)
        paths = chain_paths(target)
        if len(paths) < len(base) or paths[len(paths) - len(base) :] != base:
            raise OverlayError(
                f"cannot restore {snapshot!r} on {self!r}: it was not taken on this stack's "
                "base; restore snapshots taken on this stack, or mount a new stack on it "
                "with OverlayStack([snapshot])"
            )
        inside = self._step_out()
        _busy.check_idle(space.merged, "restore", self.in_place)
        backend: object = self._backend
        if isinstance(backend, RestoresInPlace) and self._restore_in_place(backend, space, target):
            self._step_in(inside)
            return
        self._unmount_for(space, "restore")
        remove_workspace(space.upper)
        self._remount(space, target)
        self._step_in(inside)

    def reset(self, snapshot: Snapshot | None = None) -> None:
        """Go back to :attr:`base` (or to *snapshot*) on a fresh, empty upper layer.

        The same as ``restore(snapshot or stack.base)``: the union is mounted again at the
        same :attr:`merged` path, and the cost does not depend on the size of the base.
        Snapshots taken since are dropped from the stack (they stay valid while referred
        to). pytest-overlay calls it before every Hypothesis example of a ``@given`` test;
        call it yourself where nothing does, e.g. in a state machine's ``__init__``.
        """
        self.restore(snapshot if snapshot is not None else self.base)

    def diff(self, since: Snapshot | None = None) -> list[Change]:
        """The content-level changes from *since* (default: :attr:`base`) to the live view.

        Unlike :meth:`changes`, a file copied up but left identical is not a change, and a
        directory counts as modified only when its own mode or owner changed. See
        :meth:`Snapshot.diff <pytest_overlay.Snapshot.diff>`.
        """
        return [d.change for d in self._deltas_since(since)]

    def _deltas_since(self, since: Snapshot | None = None) -> list[_statediff.Delta]:
        """:meth:`diff`, with the entries before and after each change."""
        space = self._require()
        assert self._backend is not None
        old = self._real((since if since is not None else self.base).layers)
        live = self._real(self.lowers)
        common = common_suffix(old, live)
        if common == 0:
            raise OverlayError(
                f"{since!r} shares no layer with {self!r}: compare states of the same base"
            )
        # Only what lies above the common layers can differ: the snapshot's own layers,
        # the stack's frozen layers, and what the live upper layer changes.
        tree = _statediff.touched(old[: len(old) - common])
        _statediff.touched(live[: len(live) - common], tree)
        _statediff.touched_by_changes(self._backend.changes(live, space), tree)
        return _statediff.diff_states(
            _statediff.ChainState(old), _statediff.DirState(space.merged), tree
        )

    def _restore_in_place(
        self, backend: RestoresInPlace, space: Workspace, target: tuple[Layer, ...]
    ) -> bool:
        try:
            backend.restore_in_place(
                self._real(self.lowers), self._real(chain_paths(target)), space
            )
        except (OSError, OverlayError):
            # A directory the test made unreadable, say: unmounting copes with that.
            return False
        remove_workspace(space.upper)
        self._upper_attributes = fresh_upper(space, layer_path(target[0]))
        self._chain = target
        return True

    def _step_out(self) -> str | None:
        """In place, move a working directory inside the union to the same place
        underneath it, so a remount is not busy; return where, to :meth:`_step_in` after."""
        covered = self._covered
        inside = covered.cwd_inside() if covered is not None else None
        if covered is not None and inside is not None:
            covered.step_under(inside)
        return inside

    def _step_in(self, inside: str | None) -> None:
        if inside is not None and self._covered is not None:
            self._covered.enter(inside)

    def _unmount_for(self, space: Workspace, doing: str) -> None:
        assert self._backend is not None
        if self._backend.unmount(space):
            return
        # Something opened a file between the busy check and the unmount. The detached
        # mount may still write to the upper layer, which must not become a frozen layer.
        self.clean_unmount = False
        held = _busy.detached_holders(space.merged)
        self._release(space)
        who = f" ({'; '.join(held)})" if held else ""
        raise OverlayError(
            f"cannot {doing}: {space.merged} became busy{who} while unmounting and was "
            "detached; this stack is now closed. Close files under merged before "
            "snapshot/restore."
        )

    def _remount(self, space: Workspace, chain: tuple[Layer, ...]) -> None:
        assert self._backend is not None
        try:
            self._upper_attributes = fresh_upper(space, layer_path(chain[0]))
            self._backend.mount(self._real(chain_paths(chain)), space)
        except OverlayError as exc:
            self._release(space)
            raise OverlayError(
                f"{exc} (while mounting again for a snapshot or restore; the stack is now closed)"
            ) from exc
        except BaseException:
            self._release(space)
            raise
        self._chain = chain


def _keep_layer(upper: Path, destination: Path) -> list[str]:
    """Move the unmounted *upper* to *destination*, leaving an empty upper behind.

    Returns what could not be kept (see :func:`~pytest_overlay._layers.copytree.copy_layer`).
    """
    skipped: list[str] = []
    try:
        # Moved, not copied: the upper may be large, and it is ours to give away now.
        os.rename(upper, destination)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        # The workspace is on a tmpfs that dies with pytest: copy the layer to disk as it
        # is, whiteouts, opaque markers and whatever else the test left included.
        from pytest_overlay._layers.copytree import copy_layer

        skipped = copy_layer(upper, destination)
        remove_workspace(upper)
    upper.mkdir()
    return skipped


def _getcwd() -> str | None:
    try:
        return os.getcwd()
    except OSError:  # the working directory was deleted
        return None


def _cwd_inside(merged: Path) -> bool:
    cwd = _getcwd()
    if cwd is None:
        # Deleted, maybe by the copy backend's teardown-to-be or by the test itself:
        # the kernel still knows where it was.
        try:
            cwd = os.readlink("/proc/self/cwd").removesuffix(" (deleted)")
        except OSError:
            return False
    return _inside(cwd, merged)


def _leave(merged: Path, back_to: str | None) -> None:
    """If this process works inside *merged*, move it to *back_to* (or outside merged)."""
    if not _cwd_inside(merged):
        return
    for candidate in (back_to, os.fspath(merged.parent.parent)):
        if candidate is None or _inside(candidate, merged):
            continue
        try:
            os.chdir(candidate)
        except OSError:
            continue
        return


def _inside(path: str, merged: Path) -> bool:
    prefix = os.fspath(merged)
    return path == prefix or path.startswith(prefix + "/")


def _detached_message(merged: Path, held: Sequence[str]) -> str:
    who = "; ".join(held) if held else "held by a process this user cannot inspect"
    return (
        f"{merged} was still in use at teardown ({who}), so it was detached lazily: it lives "
        "on, writing to its upper layer, until the last of those files is closed. Close "
        "files and stop the processes a test starts in merged before the test ends."
    )


#: How many entries a warning about a kept layer names before summarising the rest.
_SKIPPED_LISTED = 5


def _skipped_message(destination: Path, skipped: Sequence[str]) -> str:
    listing = "; ".join(skipped[:_SKIPPED_LISTED])
    more = len(skipped) - _SKIPPED_LISTED
    if more > 0:
        listing += f"; and {more} more"
    return (
        f"the upper layer kept at {destination} is missing {len(skipped)} entr"
        f"{'y' if len(skipped) == 1 else 'ies'} that could not be copied ({listing})"
    )
