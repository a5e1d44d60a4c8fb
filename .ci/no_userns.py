"""Run a command the way Docker's default seccomp profile would: no user namespaces.

    python3 .ci/no_userns.py USER -- COMMAND [ARG...]

Run as root. Installs a seccomp filter that fails unshare(2) and clone(2) with
CLONE_NEWUSER (EPERM) and clone3(2) (ENOSYS, so libc falls back to clone), as Docker's
default profile does, then becomes USER and executes COMMAND. The filter is installed
while still root, so no_new_privs stays off and setuid fusermount3 keeps working: this is
the machine of a user whose kernel or container forbids unprivileged user namespaces, the
case where pytest-overlay must fall back to fuse-overlayfs through fusermount3, or copy.

CI uses it because the sysctls that would do the same (user.max_user_namespaces) are
read-only there. x86_64 only.
"""

from __future__ import annotations

import ctypes
import os
import platform
import pwd
import struct
import sys

# <linux/filter.h>, <linux/seccomp.h>, <linux/audit.h>
BPF_LD, BPF_W, BPF_ABS = 0x00, 0x00, 0x20
BPF_JMP, BPF_JEQ, BPF_JSET, BPF_K = 0x05, 0x10, 0x40, 0x00
BPF_RET = 0x06
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_KILL_PROCESS = 0x80000000
AUDIT_ARCH_X86_64 = 0xC000003E
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2
# struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6]
OFFSET_NR, OFFSET_ARCH, OFFSET_ARG0 = 0, 4, 16
NR_CLONE, NR_UNSHARE, NR_CLONE3 = 56, 272, 435
CLONE_NEWUSER = 0x10000000
EPERM, ENOSYS = 1, 38


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k)


def _program() -> bytes:
    ld = BPF_LD | BPF_W | BPF_ABS
    jeq = BPF_JMP | BPF_JEQ | BPF_K
    jset = BPF_JMP | BPF_JSET | BPF_K
    ret = BPF_RET | BPF_K
    return b"".join(
        [
            _insn(ld, 0, 0, OFFSET_ARCH),
            _insn(jeq, 1, 0, AUDIT_ARCH_X86_64),
            _insn(ret, 0, 0, SECCOMP_RET_KILL_PROCESS),  # another ABI: refuse to guess
            _insn(ld, 0, 0, OFFSET_NR),
            _insn(jeq, 0, 1, NR_CLONE3),
            _insn(ret, 0, 0, SECCOMP_RET_ERRNO | ENOSYS),
            _insn(jeq, 1, 0, NR_CLONE),
            _insn(jeq, 0, 3, NR_UNSHARE),
            # clone or unshare: the flags are the low 32 bits of the first argument.
            _insn(ld, 0, 0, OFFSET_ARG0),
            _insn(jset, 0, 1, CLONE_NEWUSER),
            _insn(ret, 0, 0, SECCOMP_RET_ERRNO | EPERM),
            _insn(ret, 0, 0, SECCOMP_RET_ALLOW),
        ]
    )


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install() -> None:
    code = _program()
    buffer = ctypes.create_string_buffer(code, len(code))
    prog = _SockFprog(len(code) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong]
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"installing the seccomp filter: {os.strerror(errno)}")


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    if platform.machine() != "x86_64" or os.geteuid() != 0:
        print("no_userns.py: needs root on x86_64", file=sys.stderr)
        return 2
    user = pwd.getpwnam(argv[0])
    install()
    os.initgroups(user.pw_name, user.pw_gid)
    os.setgid(user.pw_gid)
    os.setuid(user.pw_uid)
    os.environ.update(
        HOME=user.pw_dir,
        USER=user.pw_name,
        LOGNAME=user.pw_name,
        PATH="/usr/local/bin:/usr/bin:/bin",  # not root's: it may point into /root
    )
    os.execvp(argv[2], argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
