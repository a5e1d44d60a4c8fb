"""Layer changes in the vocabulary of container image diffs: :class:`Change`, :class:`ChangeKind`.

``ADD``, ``MODIFY`` and ``DELETE`` as containerd and moby use them for a container's
writable layer; the full rules are in :mod:`pytest_overlay._layers.changes`, which the
layer code below the public modules shares.
"""

from pytest_overlay._layers.changes import Change, ChangeKind, diff_upper, sort_changes

__all__ = ["Change", "ChangeKind", "diff_upper", "sort_changes"]
