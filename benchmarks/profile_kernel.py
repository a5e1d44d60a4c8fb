"""Where the kernel backend's per-test time goes, and what the ideas to cut it would gain.

    python benchmarks/profile_kernel.py [--cycles 300] [--py-spy]

Needs root (it mounts in a private mount namespace of its own). Everything runs in this
one process, interleaved cycle by cycle, so background load hits every variant alike:

- phases of one cycle (create_workspace, mount, the test's write, umount, remove_workspace);
- whole cycles of ``OverlayStack`` with the workspace on the scratch filesystem (what the
  fixture does today), on a tmpfs, and with deletion deferred (renamed into a trash
  directory, deleted in one batch at the end, whose cost is then spread over the cycles);
- the same mount done with bare ctypes calls, on both filesystems, for reference.

With ``--py-spy`` it also samples a real pytest run of the kernel configuration and lists
the functions that take the most time. Writes ``results/profile.md``.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import bases
import configs
from harness import child_env, repo_root
from report import fmt_time, markdown_table

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(repo_root()))

from pytest_overlay import OverlayStack  # noqa: E402
from pytest_overlay import snapshot as _snapshot  # noqa: E402
from pytest_overlay import stack as _stack  # noqa: E402
from pytest_overlay._linux import mount as _mount  # noqa: E402
from pytest_overlay._linux import namespace as _namespace  # noqa: E402
from pytest_overlay._linux import syscalls as _syscalls  # noqa: E402
from pytest_overlay._linux.workspace import create_workspace, remove_workspace  # noqa: E402

Samples = dict[str, list[float]]


def _append(root: Path) -> None:
    with open(root / bases.PROBE_FILE, "ab") as f:
        f.write(b"x")


def phases(base: Path, parent: Path, out: Samples, prefix: str) -> None:
    clock = time.perf_counter
    t0 = clock()
    space = create_workspace(parent, base)
    t1 = clock()
    _mount.mount_overlay([base], space.upper, space.work, space.merged, flags=("volatile",))
    t2 = clock()
    _append(space.merged)
    t3 = clock()
    _syscalls.umount(space.merged)
    t4 = clock()
    remove_workspace(space.root)
    t5 = clock()
    for name, seconds in (
        ("create_workspace", t1 - t0),
        ("mount (fsopen ... move_mount)", t2 - t1),
        ("the test's write (copy-up)", t3 - t2),
        ("umount", t4 - t3),
        ("remove_workspace", t5 - t4),
        ("sum", t5 - t0),
    ):
        out.setdefault(f"{prefix}{name}", []).append(seconds)


def stack_cycle(base: Path, parent: Path) -> float:
    start = time.perf_counter()
    with OverlayStack([base], workspace=parent) as stack:
        _append(stack.merged)
    return time.perf_counter() - start


def bare_cycle(base: Path, parent: Path) -> float:
    start = time.perf_counter()
    root = tempfile.mkdtemp(dir=parent)
    upper, work, merged = root + "/upper", root + "/work", root + "/merged"
    for path in (upper, work, merged):
        os.mkdir(path)
    fd = _syscalls.fsopen("overlay")
    _syscalls.fsconfig_string(fd, "lowerdir+", str(base))
    _syscalls.fsconfig_string(fd, "upperdir", upper)
    _syscalls.fsconfig_string(fd, "workdir", work)
    _syscalls.fsconfig_flag(fd, "volatile")
    _syscalls.fsconfig_create(fd)
    mount_fd = _syscalls.fsmount(fd)
    os.close(fd)
    _syscalls.move_mount(mount_fd, merged)
    os.close(mount_fd)
    _append(Path(merged))
    _syscalls.umount(merged)
    shutil.rmtree(root)
    return time.perf_counter() - start


_trash_names = itertools.count()


@contextmanager
def deferred_removal(trash: Path) -> Iterator[None]:
    """Make stacks rename their workspace into *trash* instead of deleting it."""
    trash.mkdir(exist_ok=True)

    def to_trash(root: Path) -> None:
        os.rename(root, trash / str(next(_trash_names)))

    # stack.py and snapshot.py call remove_workspace by the name they imported.
    modules = (_stack, _snapshot)
    saved = [getattr(m, "remove_workspace") for m in modules]  # noqa: B009
    for module in modules:
        setattr(module, "remove_workspace", to_trash)  # noqa: B010
    try:
        yield
    finally:
        for module, original in zip(modules, saved, strict=True):
            setattr(module, "remove_workspace", original)  # noqa: B010


def py_spy_top(base: Path, scratch: Path, tests: int) -> str:
    if shutil.which("py-spy") is None:
        return "py-spy is not installed (pip install py-spy)."
    project = configs.write_project(configs.overlay("kernel"), base, scratch / "spy-project")
    raw = scratch / "spy.txt"
    env = child_env()
    env["BENCH_N"], env["BENCH_OUT"] = str(tests), str(project / "result.json")
    pytest_cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    pytest_cmd += ["-p", "pytest_overlay.plugin", f"--basetemp={scratch / 'spy-basetemp'}"]
    subprocess.run(
        ["py-spy", "record", "-r", "1000", "-f", "raw", "-o", str(raw), "--", *pytest_cmd],
        cwd=project,
        env=env,
        capture_output=True,
        check=True,
    )
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        frames, _, count = line.rpartition(" ")
        total += int(count)
        seen = set()
        for frame in frames.split(";"):
            name, _, where = frame.partition(" (")
            key = f"{name} ({where.split(':')[0].rsplit('/', 1)[-1]}"
            if key not in seen:
                seen.add(key)
                inclusive[key] += int(count)
    wanted = ("pytest_overlay", "overlay_stack", "test_write", "TerminalReporter", "rmtree")
    rows = [
        [name + ")", f"{100 * n / total:.1f}%"]
        for name, n in inclusive.most_common()
        if any(w in name for w in wanted) or "_workspace" in name or "_syscalls" in name
    ][:25]
    header = ["function (file)", "share of samples, inclusive"]
    return f"py-spy over {tests} tests (1,000 samples/s):\n\n" + markdown_table(header, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=300)
    parser.add_argument("--scratch", type=Path)
    parser.add_argument("--py-spy", action="store_true", help="also sample a pytest run")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "profile.md")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("profile_kernel.py mounts directly: run it as root")
    _namespace.enter_private_mount_namespace()
    scratch = (args.scratch or Path(tempfile.mkdtemp(prefix="overlay-profile-"))).resolve()
    base = bases.ensure_base(bases.SMALL, scratch)
    disk = scratch / "disk"
    ram = scratch / "tmpfs"
    disk.mkdir(exist_ok=True)
    ram.mkdir(exist_ok=True)
    _syscalls.mount("tmpfs", ram, "tmpfs", 0, "mode=0700")
    disk_fs = subprocess.run(
        ["stat", "-f", "-c", "%T", str(disk)], capture_output=True, text=True
    ).stdout.strip()

    samples: Samples = {}
    trash = disk / "trash"
    variants: dict[str, Callable[[], float]] = {
        "OverlayStack, workspace on disk (today)": lambda: stack_cycle(base, disk / "ws"),
        "OverlayStack, workspace on tmpfs": lambda: stack_cycle(base, ram / "ws"),
        "bare ctypes, disk": lambda: bare_cycle(base, disk),
        "bare ctypes, tmpfs": lambda: bare_cycle(base, ram),
    }
    deferred_key = "OverlayStack, disk, deletion deferred (per test)"
    for _ in range(args.cycles):
        phases(base, disk, samples, "disk: ")
        phases(base, ram, samples, "tmpfs: ")
        for name, func in variants.items():
            samples.setdefault(name, []).append(func())
        with deferred_removal(trash):
            samples.setdefault(deferred_key, []).append(stack_cycle(base, disk / "ws"))
    start = time.perf_counter()
    remove_workspace(trash)
    batch = time.perf_counter() - start
    deferred = statistics.median(samples[deferred_key])
    _syscalls.umount(ram)

    rows = [[name, fmt_time(statistics.median(v))] for name, v in samples.items()]
    rows.append(
        [
            "... plus its share of the batch deletion at the end",
            fmt_time(deferred + batch / args.cycles),
        ]
    )
    text = [
        "# Kernel backend: where a test's overlay time goes",
        "",
        f"`python benchmarks/profile_kernel.py --cycles {args.cycles}`, as root; "
        f"disk = {disk_fs}, median of {args.cycles} interleaved cycles; load average "
        f"{os.getloadavg()[0]:.2f} at the end. Base: {bases.SMALL.label}; each cycle "
        "appends one byte to one base file.",
        "",
        markdown_table(["phase or variant", "median"], rows),
    ]
    if args.py_spy:
        text += ["", py_spy_top(base, scratch, 1000)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(text) + "\n")
    print(args.out.read_text())
    if args.scratch is None:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
