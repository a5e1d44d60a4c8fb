"""Recognising the kernel's pseudo filesystems (/proc, /sys, ...), which are no layers.

Their files are made up as they are read and their sizes are often 0, so overlayfs
refuses them (EINVAL with no reason given) or, for sysfs, mounts a union whose copy-up
fails later; fuse-overlayfs and a copy fare no better. They are recognised by the
``f_type`` of statfs(2): cheap, and right however the path was reached.
"""

from __future__ import annotations

import os
import sys
from typing import Final

from pytest_overlay._linux import syscalls as _syscalls

#: f_type magic numbers (include/uapi/linux/magic.h) and the filesystem's name.
PSEUDO_FILESYSTEMS: Final = {
    0x00009FA0: "proc",
    0x62656572: "sysfs",
    0x00001CD1: "devpts",
    0x64626720: "debugfs",
    0x74726163: "tracefs",
    0x73636673: "securityfs",
    0x0027E0EB: "cgroup",
    0x63677270: "cgroup2",
    0x6165676C: "pstore",
    0xCAFE4A11: "bpf",
    0x62656570: "configfs",
    0xDE5E81E4: "efivarfs",
    0x65735543: "fusectl",
    0x19800202: "mqueue",
    0x42494E4D: "binfmt_misc",
    0xF97CFF8C: "selinuxfs",
    0x43415D53: "smackfs",
    0x6E736673: "nsfs",
    0x67596969: "rpc_pipefs",
}


def pseudo_filesystem(path: str | os.PathLike[str]) -> str | None:
    """The name of the kernel pseudo filesystem *path* is on, or None for a real one."""
    if sys.platform != "linux":  # statfs's layout differs elsewhere; so do the paths
        return None
    try:
        kind = _syscalls.statfs_type(path)
    except OSError:
        return None  # whatever stops statfs will stop the mount with its own message
    # f_type is a signed long: magics with the top bit set come back negative.
    return PSEUDO_FILESYSTEMS.get(kind & 0xFFFFFFFF)
