"""Benchmark pytest-overlay against the tools users pick instead. One command:

    python benchmarks/run.py            # 1 MB and 100 MB bases, about 10 minutes
    python benchmarks/run.py --quick    # one short round, a couple of minutes
    python benchmarks/run.py --huge     # adds the 100,000-file / 1 GB base
    python benchmarks/run.py --update   # write benchmarks/results/ (committed)

Each configuration is a real pytest run of N tests in a subprocess (see configs.py); the
per-test cost is setup + call + teardown from pytest's own reports. Configurations run
interleaved in several rounds, so load from elsewhere on the machine hits them alike.
Results (tables, plot, and the raw JSON under raw/) go to a new scratch directory, or with
--update to benchmarks/results/, the committed ones. Besides pytest's own per-test
durations, each configuration is also run with --collect-only, and the difference per
test, CPU and wall, is the whole process's per-test cost.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import bases
import configs
import report
from harness import Run, child_env, repo_root, run_config, run_process, run_process_cpu
from report import best

HERE = Path(__file__).resolve().parent


def _fs_type(path: Path) -> str:
    best, kind = "", "?"
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            mount_point = fields[1].replace("\\040", " ")
            inside = str(path) == mount_point or str(path).startswith(
                mount_point.rstrip("/") + "/"
            )
            if inside and len(mount_point) >= len(best):
                best, kind = mount_point, fields[2]
    return kind


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def machine_info(scratch: Path) -> dict[str, Any]:
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": round(mem_gib),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "scratch_fs": _fs_type(scratch),
        "uid": os.geteuid(),
        "versions": {
            d: _version(d) for d in ("pytest", "pytest-datadir", "pytest-datafiles", "pyfakefs")
        },
        "load_before": os.getloadavg(),
    }
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    info["summary"] = (
        f"{info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB RAM, Linux "
        f"{info['kernel']}, Python {info['python']}, workspaces and copies on "
        f"{info['scratch_fs']}, {'root' if info['uid'] == 0 else 'uid ' + str(info['uid'])}"
        f"; {versions}"
    )
    return info


def backend_names() -> list[str]:
    """The values --overlay-backend accepts, asked of the checkout being measured."""
    code = (
        "try:\n"
        "    from pytest_overlay._backends import ladder as b\n"
        "except ImportError:  # a checkout from before the packages\n"
        "    from pytest_overlay import _backends as b\n"
        "names = b.backend_names() if hasattr(b, 'backend_names') else b.BACKEND_NAMES\n"
        "print(' '.join(n for n in names if n != 'auto'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=child_env(),
        cwd=HERE,
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        return ["kernel"]
    return out.stdout.split()


def working_backends(base: Path, scratch: Path, notes: list[str]) -> list[configs.Config]:
    found = []
    for name in backend_names():
        config = configs.overlay(name)
        probe = run_config(config, base, 1, scratch)
        if probe.ok:
            found.append(config)
        else:
            reason = probe.detail.strip().splitlines()[-1:] or [probe.outcome]
            notes.append(f"backend {name!r} not measured: {probe.outcome}: {reason[0][:200]}")
    return found


def _pick_tests(seconds: float, args: argparse.Namespace) -> int:
    if args.tests:
        return int(args.tests)
    fits = int(args.budget / max(seconds, 1e-6))
    return max(int(args.min_tests), min(int(args.max_tests), fits))


def measure_base(
    spec: bases.BaseSpec, base: Path, chosen: list[configs.Config], args: argparse.Namespace
) -> dict[str, Any]:
    scratch: Path = args.scratch
    plan: dict[str, int] = {}
    slow: dict[str, bool] = {}
    early: dict[str, list[Run]] = {}
    idle: dict[str, float] = {}
    cells: dict[str, Any] = {}
    for config in chosen:
        # A short run warms the page cache and tells how many tests fit the time budget.
        calib = run_config(config, base, args.min_tests, scratch)
        if not calib.ok:
            cells[config.key] = {"ok": False, "outcome": calib.outcome, "detail": calib.detail}
            print(f"  {config.key}: {calib.outcome}: {calib.detail[-300:]}", flush=True)
            continue
        plan[config.key] = _pick_tests(calib.median, args)
        # Seconds per test (copies of a big base): the short run is all the time allows,
        # and load from elsewhere matters little at that scale.
        slow[config.key] = calib.median > args.budget / 2
        idle[config.key] = run_config(config, base, 0, scratch).wall
        early[config.key] = [calib] if slow[config.key] else []
    runs: dict[str, list[Run]] = {key: list(early[key]) for key in plan}
    # Whole process, per test: (full run - the same tests only collected) / N, CPU and
    # wall. pytest's reports leave out its own per-test work (logging, hooks, reporting).
    whole: dict[str, list[tuple[float, float]]] = {key: [] for key in plan}
    for round_no in range(args.rounds):
        for config in chosen:
            if config.key not in plan or slow[config.key]:
                continue
            run = run_config(config, base, plan[config.key], scratch)
            runs[config.key].append(run)
            collected = run_config(config, base, plan[config.key], scratch, collect_only=True)
            if run.ok and collected.ok and run.tests:
                whole[config.key].append(
                    (
                        (run.cpu - collected.cpu) / run.tests,
                        (run.wall - collected.wall) / run.tests,
                    )
                )
            state = f"median {report.fmt_time(run.median)}" if run.ok else run.outcome
            print(
                f"  [{spec.key} round {round_no + 1}/{args.rounds}] {config.key}: "
                f"{run.tests} tests, {state}",
                flush=True,
            )
    for key, key_runs in runs.items():
        good = [r for r in key_runs if r.ok]
        if not good:
            bad = key_runs[-1]
            cells[key] = {"ok": False, "outcome": bad.outcome, "detail": bad.detail}
            continue
        pooled = sorted(t for r in good for t in r.per_test)
        cells[key] = {
            "ok": True,
            "tests": len(pooled),
            "median": statistics.median(r.median for r in good),
            "round_medians": [r.median for r in good],
            "pooled_median": statistics.median(pooled),
            "p90": pooled[int(0.9 * (len(pooled) - 1))],
            "mean": statistics.fmean(pooled),
            "amortized": statistics.median((r.wall - idle[key]) / r.tests for r in good),
            "max_rss": max(r.max_rss for r in good),
            "leftover_workspaces": sum(r.leftovers for r in good),
        }
        if whole[key]:
            cells[key]["process_cpu_rounds"] = [c for c, _ in whole[key]]
            cells[key]["process_wall_rounds"] = [w for _, w in whole[key]]
            cells[key]["process_cpu"] = statistics.median(c for c, _ in whole[key])
            cells[key]["process_wall"] = statistics.median(w for _, w in whole[key])
    return cells


def import_cost(args: argparse.Namespace) -> list[dict[str, Any]]:
    """CPU time of pytest on an empty suite, with and without the plugin, interleaved."""
    project = args.scratch / "empty-project"
    project.mkdir(exist_ok=True)
    (project / "pytest.ini").write_text("[pytest]\n")
    quiet = child_env()
    autoload = dict(quiet)
    del autoload["PYTEST_DISABLE_PLUGIN_AUTOLOAD"]
    # Not -q: the report header (which names the backend) is part of a normal run.
    base_cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider"]
    variants = {
        "without": (base_cmd, quiet),
        "with": ([*base_cmd, "-p", "pytest_overlay.plugin"], quiet),
        "all-no-overlay": ([*base_cmd, "-p", "no:overlay"], autoload),
        "all": (base_cmd, autoload),
    }
    # CPU time of the whole process (user + system), the steady figure on a shared
    # machine; wall time swung by 20 ms and more between runs of the same command.
    times: dict[str, list[float]] = {k: [] for k in variants}
    for round_no in range(args.import_repeat + 1):
        for key, (cmd, env) in variants.items():
            seconds = run_process_cpu(cmd, project, env)[4]
            if round_no:  # the first round only writes the bytecode caches
                times[key].append(seconds)
    importing = (
        "import time, pytest\n"
        "t = time.perf_counter()\n"
        "import pytest_overlay.plugin\n"
        "print(time.perf_counter() - t)\n"
    )
    inproc = []
    for _ in range(args.import_repeat):
        out = subprocess.run(
            [sys.executable, "-c", importing], env=quiet, capture_output=True, text=True
        )
        inproc.append(float(out.stdout.strip() or "nan"))
    med = {k: statistics.median(v) for k, v in times.items()}

    def paired(with_key: str, without_key: str) -> float:
        # The variants run one after another in each round: the difference within a
        # round cancels the load that moves between rounds.
        return statistics.median(
            a - b for a, b in zip(times[with_key], times[without_key], strict=True)
        )

    return [
        {"label": "pytest, empty suite, no plugins (CPU)", "seconds": med["without"]},
        {"label": "... plus -p pytest_overlay.plugin (CPU)", "seconds": med["with"]},
        {
            "key": "plugin",
            "label": "plugin import + configure (median of the rounds' CPU differences)",
            "seconds": paired("with", "without"),
        },
        {
            "key": "plugin-installed",
            "label": "all installed plugins, with vs -p no:overlay (median of the rounds' "
            "CPU differences)",
            "seconds": paired("all", "all-no-overlay"),
        },
        {
            "label": "import pytest_overlay.plugin alone (pytest already imported)",
            "seconds": statistics.median(inproc),
        },
    ]


def changes_cost(
    specs: list[tuple[bases.BaseSpec, Path]], args: argparse.Namespace
) -> dict[str, Any]:
    blocks = []
    note = ""
    for spec, path in specs:
        if spec.files <= 100:
            counts = [0, 1, 10, 100]
        elif spec.files >= 100_000:
            counts = [10, 1000]
        else:
            counts = [0, 1, 10, 100, 1000, 10_000]
        if args.quick:
            counts = [c for c in counts if c <= 1000]
        out = args.scratch / f"changes-{spec.key}.json"
        workspace = args.scratch / "changes-ws"
        cmd = [
            sys.executable,
            str(HERE / "changes_cost.py"),
            f"--base={path}",
            f"--files={spec.files}",
            f"--workspace={workspace}",
            f"--out={out}",
            "--changed",
            *map(str, counts),
        ]
        code, output, _, _ = run_process(cmd, HERE, child_env())
        if code != 0:
            note = f"changes() benchmark failed: {output[-500:]}"
            continue
        block = json.loads(out.read_text())
        note = block.pop("snapshot_note") or note
        blocks.append(block)
    if note:
        note = f"Snapshot, diff and restore: not measured ({note})."
    else:
        note = (
            "changes(): the upper layer against the base (layer level); diff: "
            "stack.diff(), the live view against the base (content level); snapshot: "
            "stack.snapshot() freezing the changed files; snapshot diff: "
            "stack.base.diff(snapshot); restore: stack.restore(snapshot) with as many "
            "changed files to throw away."
        )
    return {"blocks": blocks, "note": note}


def depth_cost(args: argparse.Namespace) -> dict[str, Any]:
    """Many base layers, and deep snapshot chains (depth_cost.py, in a subprocess)."""
    out = args.scratch / "depth.json"
    cmd = [
        sys.executable,
        str(HERE / "depth_cost.py"),
        f"--workspace={args.scratch / 'depth-ws'}",
        f"--out={out}",
        f"--cycles={21 if args.quick else 61}",
    ]
    code, output, _, _ = run_process(cmd, HERE, child_env())
    if code != 0:
        return {"error": output[-1000:]}
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def _cell(cells: dict[str, Any], key: str) -> dict[str, Any] | None:
    cell = cells.get(key)
    return cell if cell and cell.get("ok") else None


def _paired_ratios(cells: dict[str, Any], overlay_key: str, bare_key: str) -> list[float]:
    """(overlay - empty) / (bare - empty) within each round, CPU of the whole process."""
    rounds = [
        (cells.get(key) or {}).get("process_cpu_rounds") or []
        for key in (overlay_key, bare_key, "empty")
    ]
    if not all(rounds) or len({len(r) for r in rounds}) != 1:
        return []
    return [(o - e) / (b - e) for o, b, e in zip(*rounds, strict=True) if b > e]


def evaluate_targets(data: dict[str, Any]) -> list[dict[str, str]]:
    targets: list[dict[str, str]] = []

    def add(target: str, measured: str, met: bool | None) -> None:
        state = "n/a" if met is None else ("yes" if met else "no")
        targets.append({"target": target, "measured": measured, "met": state})

    fmt, ratio = report.fmt_time, report.fmt_ratio
    by_base = {b["key"]: data["cells"][b["key"]] for b in data["bases"]}
    reference = data.get("reference", report.KERNEL)
    kernel = {k: _cell(c, reference) for k, c in by_base.items()}
    measured = [
        f"{k}: {fmt(best(c))} (median of rounds {fmt(c['median'])})"
        for k, c in kernel.items()
        if c
    ]
    add(
        "kernel backend per test < 1.5 ms median at every base size",
        ", ".join(measured),
        all(c and best(c) < 1.5e-3 for c in kernel.values()),
    )
    net = []
    for key, cells in by_base.items():
        empty, k = _cell(cells, "empty"), kernel[key]
        if empty and k:
            net.append((key, best(k) - best(empty)))
    add(
        "... the same, net of pytest's own per-test cost (empty test)",
        ", ".join(f"{key}: {fmt(v)}" for key, v in net),
        all(v < 1.5e-3 for _, v in net) if net else None,
    )
    pairs = []
    for key, cells in by_base.items():
        bare, k = _cell(cells, "bare-ctypes"), kernel[key]
        if bare and k:
            pairs.append((key, best(k) / best(bare)))
    add(
        "kernel backend within 2x of a bare ctypes mount+umount (same run)",
        ", ".join(f"{key}: {ratio(v)}" for key, v in pairs),
        all(v <= 2 for _, v in pairs) if pairs else None,
    )

    def cpu(cells: dict[str, Any], key: str) -> float | None:
        cell = _cell(cells, key)
        return cell.get("process_cpu") if cell else None

    for overlay_key, bare_key, where in (
        (reference, "bare-ctypes", "tmpfs"),
        ("overlay-kernel-disk", "bare-ctypes-disk", "disk"),
    ):
        over: list[tuple[str, float, str]] = []
        for key, cells in by_base.items():
            oc, bc, ec = cpu(cells, overlay_key), cpu(cells, bare_key), cpu(cells, "empty")
            if oc is None or bc is None or ec is None or bc <= ec:
                continue
            # The three run one after another in each round, under the same load: the
            # ratio within a round cancels the drift between rounds, which on a shared
            # machine moves one configuration's CPU per test by 10-20%.
            paired = _paired_ratios(cells, overlay_key, bare_key)
            if paired:
                value = statistics.median(paired)
                text = (
                    f"{key}: {ratio(value)} (median of {len(paired)} rounds' ratios, "
                    f"{ratio(min(paired))} to {ratio(max(paired))}; ratio of the medians "
                    f"{ratio((oc - ec) / (bc - ec))})"
                )
            else:
                value = (oc - ec) / (bc - ec)
                text = f"{key}: {ratio(value)}"
            over.append((key, value, text))
        add(
            f"{overlay_key.removeprefix('overlay-')} over an empty test <= 1.15x a bare mount "
            f"fixture's, workspaces on {where} (CPU, whole process)",
            ", ".join(text for _, _, text in over),
            all(v <= 1.15 for _, v, _ in over) if over else None,
        )
    fuse = []
    for key, cells in by_base.items():
        fuse_cpu, kernel_cpu = cpu(cells, "overlay-fuse"), cpu(cells, reference)
        wall_f, wall_k = _cell(cells, "overlay-fuse"), _cell(cells, reference)
        if fuse_cpu is not None and kernel_cpu:
            walls = ""
            if wall_f and wall_k and wall_k.get("process_wall"):
                walls = f", wall {ratio(wall_f['process_wall'] / wall_k['process_wall'])}"
            value = fuse_cpu / kernel_cpu
            fuse.append((key, value, f"{key}: CPU {ratio(value)}{walls}"))
    add(
        "fuse within 2x of the kernel backend per test (CPU, whole process, daemons "
        "included; why not: docs/performance.rst)",
        ", ".join(text for _, _, text in fuse),
        all(v <= 2 for _, v, _ in fuse) if fuse else None,
    )
    extra = []
    for key, cells in by_base.items():
        p, e = cpu(cells, "empty-plugin"), cpu(cells, "empty")
        if p is not None and e is not None:
            extra.append((key, p - e))
    add(
        "a test that does not use the plugin pays nothing measurable (CPU, whole process; "
        "differences of a few us are noise)",
        ", ".join(f"{key}: {(v * 1e6):+.0f} us" for key, v in extra),
        all(v < 20e-6 for _, v in extra) if extra else None,
    )

    def versus(other: str, base_key: str) -> float | None:
        cells = by_base.get(base_key)
        if not cells:
            return None
        o, k = _cell(cells, other), _cell(cells, reference)
        return best(o) / best(k) if o and k else None

    r = versus("copytree", "large")
    add(
        ">= 1,000x cheaper than copytree at 10,000 files",
        ratio(r),
        None if r is None else r >= 1000,
    )
    rs = {b: versus("pyfakefs-lazy", b) for b in by_base}
    add(
        ">= 30x cheaper than pyfakefs with the base mapped lazily",
        ", ".join(f"{b}: {ratio(v)}" for b, v in rs.items()),
        all(v is not None and v >= 30 for v in rs.values()),
    )
    rs = {b: versus("lazy_datadir", b) for b in by_base}
    add(
        "no slower than pytest-datadir's lazy_datadir",
        ", ".join(f"{b}: {ratio(v)} (lazy_datadir / kernel)" for b, v in rs.items()),
        all(v is not None and v >= 1 for v in rs.values()),
    )
    plugin = next((i for i in data.get("import", []) if i.get("key") == "plugin"), None)
    if plugin:
        add(
            "plugin import + configure < 20 ms (empty suite, CPU)",
            fmt(plugin["seconds"]),
            plugin["seconds"] < 0.020,
        )
    blocks = {b["base_files"]: b["rows"] for b in data.get("changes", {}).get("blocks", [])}
    at10: dict[int, dict[str, Any]] = {}
    for files, rows in blocks.items():
        for row in rows:
            if row["changed_files"] == 10:
                at10[files] = row
    if len(at10) >= 2:
        lo, hi = min(at10), max(at10)
        growth = at10[hi]["changes"] / at10[lo]["changes"]
        add(
            "changes() cost follows the changes, not the base (10 changed files)",
            f"{fmt(at10[lo]['changes'])} at {lo:,} files, {fmt(at10[hi]['changes'])} at "
            f"{hi:,} files ({ratio(growth)})",
            growth < 2,
        )
    for config in data["configs"]:
        if not config.get("proposal"):
            continue
        cells = {b: _cell(c, config["key"]) for b, c in by_base.items()}
        if not all(cells.values()):
            continue
        name = config["label"]
        add(
            f"(proposed) {name}: < 1.5 ms median at every base size",
            ", ".join(f"{b}: {fmt(best(c))}" for b, c in cells.items() if c),
            all(best(c) < 1.5e-3 for c in cells.values() if c),
        )
        for other, factor, what in (
            ("pyfakefs-lazy", 30, ">= 30x cheaper than pyfakefs-lazy"),
            ("lazy_datadir", 1, "no slower than lazy_datadir"),
        ):
            ratios = {}
            for b, c in cells.items():
                o = _cell(by_base[b], other)
                if o and c:
                    ratios[b] = best(o) / best(c)
            add(
                f"(proposed) {name}: {what}",
                ", ".join(f"{b}: {ratio(v)}" for b, v in ratios.items()),
                all(v >= factor for v in ratios.values()) if ratios else None,
            )
    depth = data.get("depth") or {}
    layers = depth.get("many_layers")
    if layers:
        r_cpu = layers["stack"]["cpu"] / layers["raw"]["cpu"]
        r_wall = layers["stack"]["wall"] / layers["raw"]["wall"]
        add(
            f"a stack of {layers['layers']} layers within 2x of a raw mount of the same layers "
            "(mount + close)",
            f"CPU {fmt(layers['stack']['cpu'])} vs {fmt(layers['raw']['cpu'])} "
            f"({ratio(r_cpu)}), wall {fmt(layers['stack']['wall'])} vs "
            f"{fmt(layers['raw']['wall'])} ({ratio(r_wall)})",
            r_cpu <= 2 and r_wall <= 2,
        )
    snaps = depth.get("snapshots")
    if snaps:
        for op in ("snapshot", "restore"):
            shallow, deep = snaps[f"{op}_shallow"], snaps[f"{op}_deep"]
            r_cpu = deep["cpu"] / shallow["cpu"]
            r_wall = deep["wall"] / shallow["wall"]
            add(
                f"{op}() at depth {snaps['depth']} within 1.5x of depth 15",
                f"CPU {fmt(deep['cpu'])} vs {fmt(shallow['cpu'])} ({ratio(r_cpu)}), wall "
                f"{fmt(deep['wall'])} vs {fmt(shallow['wall'])} ({ratio(r_wall)}); the "
                f"mount stands on {snaps['layers_at']['deep']} layers at depth "
                f"{snaps['depth']}",
                r_cpu <= 1.5,
            )

    copy = versus("overlay-copy", "large")
    copytree = versus("copytree", "large")
    if copy is not None and copytree is not None:
        add(
            "copy backend within 1.2x of a plain copytree",
            ratio(copy / copytree),
            copy / copytree <= 1.2,
        )
    return targets


def save(data: dict[str, Any], args: argparse.Namespace) -> None:
    args.results.mkdir(parents=True, exist_ok=True)
    raw = args.results / "raw"
    raw.mkdir(exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    (raw / f"run-{stamp}.json").write_text(json.dumps(data, indent=1))
    report.write_tables(data, args.results)
    try:
        report.plot(data, args.results / "cost_vs_base.png")
    except ImportError as exc:
        # The tables are written; only the picture needs the bench extra.
        print(f"no plot ({exc}): pip install -e '.[bench]' for matplotlib", file=sys.stderr)
    print((args.results / "results.md").read_text())


def redo_import(args: argparse.Namespace) -> None:
    runs = sorted((args.results / "raw").glob("run-*.json"))
    if not runs:
        sys.exit(f"no earlier run under {args.results / 'raw'}")
    data = json.loads(runs[-1].read_text())
    data["import"] = import_cost(args)
    data["targets"] = evaluate_targets(data)
    data["command"] += "; start-up measured again with --import-only"
    save(data, args)


def merge_runs(paths: list[Path], args: argparse.Namespace) -> None:
    """Pool the rounds of several runs of the same configurations into one result."""
    runs = [json.loads(p.read_text()) for p in paths]
    data = runs[-1]
    for base_key, cells in data["cells"].items():
        for key, cell in cells.items():
            others = [r["cells"].get(base_key, {}).get(key) for r in runs]
            good = [c for c in others if c and c.get("ok")]
            if not good:
                continue
            rounds = [m for c in good for m in c["round_medians"]]
            tests = sum(c["tests"] for c in good)
            cell.update(
                tests=tests,
                round_medians=rounds,
                median=statistics.median(rounds),
                mean=sum(c["mean"] * c["tests"] for c in good) / tests,
                p90=max(c["p90"] for c in good),
                max_rss=max(c["max_rss"] for c in good),
                ok=True,
            )
    data["command"] = f"{runs[0]['command']} ({len(runs)} runs, pooled with --merge)"
    dates = sorted(r["date"] for r in runs)
    data["date"] = f"{dates[0]} to {dates[-1]}"
    load = [r["machine"].get(k) for r in runs for k in ("load_before", "load_after")]
    data["machine"]["load_during"] = load
    data["targets"] = evaluate_targets(data)
    save(data, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one short round")
    parser.add_argument("--huge", action="store_true", help="add the 100,000-file / 1 GB base")
    parser.add_argument("--scratch", type=Path, help="where bases and workspaces go")
    parser.add_argument(
        "--results",
        type=Path,
        help="where tables and plot go (default: a new scratch directory; see --update)",
    )
    parser.add_argument(
        "--update",
        action="store_true",
        help="write the results into benchmarks/results/, the committed ones",
    )
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3, quick 1)")
    parser.add_argument("--only", help="comma-separated configuration keys to run")
    parser.add_argument(
        "--tests",
        type=int,
        help="run this many tests per configuration (except copies of the base) instead "
        "of what fits the time budget: on a loaded machine the budget allows too few for "
        "the whole-process figures",
    )
    parser.add_argument("--keep-bases", action="store_true", help="keep generated bases")
    parser.add_argument(
        "--no-proposals", action="store_true", help="skip changes under evaluation"
    )
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        metavar="RAW",
        help="pool the rounds of earlier runs (raw JSON files) into one result",
    )
    parser.add_argument(
        "--import-only",
        action="store_true",
        help="measure the start-up cost again and update the last run's results",
    )
    args = parser.parse_args()
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.budget = 2.0 if args.quick else 6.0
    args.min_tests = 2
    # Enough tests that (run - collect-only) / N is not swamped by start-up noise.
    args.max_tests = 300 if args.quick else 1000
    args.import_repeat = 7 if args.quick else 31
    created_scratch = args.scratch is None
    args.scratch = (args.scratch or Path(tempfile.mkdtemp(prefix="overlay-bench-"))).resolve()
    args.scratch.mkdir(parents=True, exist_ok=True)
    if args.results is None:
        # Never over the committed results by accident: a run on another machine, or a
        # quick one, would replace the published numbers.
        args.results = (
            HERE / "results"
            if args.update
            else Path(tempfile.mkdtemp(prefix="overlay-bench-results-"))
        )
    print(f"results: {args.results}", flush=True)
    sys.path.insert(0, str(repo_root()))

    if args.merge:
        merge_runs(args.merge, args)
        if created_scratch:
            shutil.rmtree(args.scratch, ignore_errors=True)
        return
    if args.import_only:
        redo_import(args)
        if created_scratch:
            shutil.rmtree(args.scratch, ignore_errors=True)
        return
    specs = [bases.SMALL, bases.LARGE] + ([bases.HUGE] if args.huge else [])
    notes: list[str] = []
    started = time.time()
    data: dict[str, Any] = {
        "command": "python benchmarks/run.py " + " ".join(map(shlex.quote, sys.argv[1:])),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_info(args.scratch),
        "bases": [],
        "cells": {},
        "notes": notes,
    }
    print(f"scratch: {args.scratch}\nmachine: {data['machine']['summary']}", flush=True)
    paths = []
    for spec in specs:
        print(f"creating base {spec.label} ...", flush=True)
        paths.append((spec, bases.ensure_base(spec, args.scratch)))
    prints = {spec.key: bases.fingerprint(path) for spec, path in paths}

    chosen = [
        *working_backends(paths[0][1], args.scratch, notes),
        configs.OVERLAY_DATADIR,
        configs.BARE,
        configs.EMPTY,
        configs.EMPTY_WITH_PLUGIN,
        configs.REFERENCE,
        *configs.COMPETITORS,
    ]
    if os.geteuid() != 0:
        chosen.remove(configs.BARE)
        notes.append("bare ctypes baseline not measured: it needs root")
    elif any(c.key == report.KERNEL for c in chosen):
        chosen += [configs.KERNEL_ON_DISK, configs.BARE_DISK]
        if not args.no_proposals:
            chosen += configs.PROPOSALS
    if args.only:
        keys = set(args.only.split(","))
        chosen = [c for c in chosen if c.key in keys]
    overlays = [c.key for c in chosen if c.key.startswith("overlay-")]
    data["reference"] = report.KERNEL if report.KERNEL in overlays or not overlays else overlays[0]
    data["configs"] = [{"key": c.key, "label": c.label, "proposal": c.proposal} for c in chosen]
    for spec, path in paths:
        print(f"base {spec.label}", flush=True)
        data["bases"].append({"key": spec.key, "label": spec.label, "size_bytes": spec.size_bytes})
        data["cells"][spec.key] = measure_base(spec, path, chosen, args)
    print("import cost ...", flush=True)
    data["import"] = import_cost(args)
    print("changes() cost ...", flush=True)
    data["changes"] = changes_cost(paths, args)
    print("many layers, deep snapshot chains ...", flush=True)
    data["depth"] = depth_cost(args)

    for spec, path in paths:
        if bases.fingerprint(path) != prints[spec.key]:
            notes.append(f"the base {spec.label} CHANGED during the benchmark")
    leftovers = sum(
        cell.get("leftover_workspaces", 0)
        for cells in data["cells"].values()
        for cell in cells.values()
    )
    notes.append(
        f"checks: bases unchanged after every run: "
        f"{'no' if any('CHANGED' in n for n in notes) else 'yes'}; overlay workspaces left "
        f"under basetemp after the sessions: {leftovers}"
    )
    data["machine"]["load_after"] = os.getloadavg()
    data["duration_s"] = round(time.time() - started)
    data["targets"] = evaluate_targets(data)

    save(data, args)
    if created_scratch and not args.keep_bases:
        shutil.rmtree(args.scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
