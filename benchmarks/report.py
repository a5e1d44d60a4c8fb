"""Turning the raw results into the Markdown and reStructuredText tables and the plot."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

KERNEL = "overlay-kernel"


def fmt_time(seconds: float | None) -> str:
    if seconds is None or math.isnan(seconds):
        return "n/a"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 0.01:
        return f"{seconds * 1e3:.0f} ms"
    if seconds >= 0.001:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e3:.3f} ms"


def fmt_ratio(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value >= 100:
        return f"{value:,.0f}x"
    if value >= 10:
        return f"{value:.0f}x"
    return f"{value:.2f}x"


def best(cell: dict[str, Any]) -> float:
    """The cost a configuration shows: its quietest round's median per-test cost.

    Load from other processes only ever adds time, and it comes in bursts of minutes
    (a shared machine's disk journal, other test suites), so the least-disturbed round is
    the most faithful measure; every round's median stays in the details table.
    """
    return float(min(cell["round_medians"]))


def _cell(cells: dict[str, Any], key: str) -> dict[str, Any] | None:
    cell = cells.get(key)
    return cell if cell and cell.get("ok") else None


def cost_rows(
    data: dict[str, Any], keys: list[str] | None = None
) -> tuple[list[str], list[list[str]]]:
    """Main table: median per-test cost, ratio to the kernel backend, peak memory.

    The configurations named in *keys*, by default all but the changes under evaluation.
    """
    bases = data["bases"]
    header = ["Configuration"]
    for base in bases:
        header += [
            f"{base['label']}: per test",
            "vs " + data.get("reference", KERNEL).removeprefix("overlay-"),
            "peak RSS",
        ]
    rows = []
    for config in data["configs"]:
        if (config["key"] not in keys) if keys else config.get("proposal"):
            continue
        row = [config["label"]]
        for base in bases:
            cells = data["cells"][base["key"]]
            cell = _cell(cells, config["key"])
            kernel = _cell(cells, data.get("reference", KERNEL))
            if cell is None:
                reason = (cells.get(config["key"]) or {}).get("outcome", "not run")
                row += [reason, "", ""]
                continue
            ratio = best(cell) / best(kernel) if kernel else None
            row += [
                fmt_time(best(cell)),
                fmt_ratio(ratio),
                f"{cell['max_rss'] / 2**20:.0f} MB",
            ]
        rows.append(row)
    return header, rows


def process_rows(data: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Whole process, per test: CPU, CPU net of an empty test, and wall.

    Each is (a run of N tests - the same N tests only collected) / N, median of rounds.
    """
    header = ["Configuration"]
    for base in data["bases"]:
        header += [f"{base['label']}: CPU", "CPU over empty test", "wall"]
    rows = []
    for config in data["configs"]:
        row = [config["label"]]
        shown = False
        for base in data["bases"]:
            cells = data["cells"][base["key"]]
            cell = _cell(cells, config["key"])
            empty = _cell(cells, "empty")
            if cell is None or "process_cpu" not in cell:
                row += ["", "", ""]
                continue
            shown = True
            net = (
                cell["process_cpu"] - empty["process_cpu"]
                if empty and "process_cpu" in empty
                else None
            )
            row += [fmt_time(cell["process_cpu"]), fmt_time(net), fmt_time(cell["process_wall"])]
        if shown:
            rows.append(row)
    return header, rows


def detail_rows(data: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = [
        "Base",
        "Configuration",
        "tests",
        "best round",
        "median of rounds",
        "p90",
        "mean",
        "round medians",
    ]
    rows = []
    for base in data["bases"]:
        for config in data["configs"]:
            cell = _cell(data["cells"][base["key"]], config["key"])
            if cell is None:
                continue
            rounds = ", ".join(fmt_time(m) for m in cell["round_medians"])
            rows.append(
                [
                    base["label"],
                    config["label"],
                    str(cell["tests"]),
                    fmt_time(best(cell)),
                    fmt_time(cell["median"]),
                    fmt_time(cell["p90"]),
                    fmt_time(cell["mean"]),
                    rounds,
                ]
            )
    return header, rows


def changes_rows(data: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    result = data.get("changes") or {}
    ops = ["changes", "diff", "snapshot", "snapshot diff", "restore"]
    header = ["base files", "changed files", "entries reported", *ops, "changes() per entry"]
    rows = []
    for block in result.get("blocks", []):
        for row in block["rows"]:
            per_entry = row["changes"] / row["entries"] if row["entries"] else None
            rows.append(
                [
                    f"{block['base_files']:,}",
                    f"{row['changed_files']:,}",
                    f"{row['entries']:,}",
                    *(fmt_time(row.get(op)) for op in ops),
                    fmt_time(per_entry),
                ]
            )
    return header, rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def rst_table(header: list[str], rows: list[list[str]]) -> str:
    lines = [".. list-table::", "   :header-rows: 1", ""]
    for row in [header, *rows]:
        lines.append("   * - " + (row[0] or " "))
        lines += [f"     - {cell or ' '}" for cell in row[1:]]
    return "\n".join(lines) + "\n"


def targets_rows(data: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["Target", "Measured", "Met"]
    return header, [[t["target"], t["measured"], t["met"]] for t in data.get("targets", [])]


def write_tables(data: dict[str, Any], out: Path) -> None:
    """Write results.md (everything) and the .rst fragments the docs include."""
    tables = {
        "cost": cost_rows(data),
        "process": process_rows(data),
        "detail": detail_rows(data),
        "changes": changes_rows(data),
        "targets": targets_rows(data),
    }
    machine = data["machine"]
    proposed = [c for c in data["configs"] if c.get("proposal")]
    md = [
        "# pytest-overlay benchmark results",
        "",
        f"Machine: {machine['summary']}  ",
        f"Command: `{data['command']}`  ",
        f"Date: {data['date']}",
        "",
        "## Per-test cost (setup + append one byte to one base file + teardown)",
        "",
        "Median per-test cost of the quietest round (every round is in the details).",
        "",
        markdown_table(*tables["cost"]),
        "## Whole process, per test: CPU and wall",
        "",
        "(a run of N tests - the same N tests with --collect-only) / N, median of the "
        "rounds; pytest's own per-test work is included, which its reports leave out. CPU "
        "is the steady figure on a shared machine. Each overlay row has a bare mount row "
        "on the same filesystem (tmpfs: the default workspace; disk).",
        "",
        markdown_table(*tables["process"]),
        *(
            [
                "## Proposed changes, measured the same way (not the product today)",
                "",
                *(f"- {c['label']}: {c['proposal']}" for c in proposed),
                "",
                markdown_table(
                    *cost_rows(
                        data,
                        [data.get("reference", KERNEL), "bare-ctypes"]
                        + [c["key"] for c in proposed],
                    )
                ),
            ]
            if proposed
            else []
        ),
        "## Details",
        "",
        markdown_table(*tables["detail"]),
        "## changes(), snapshot, diff, restore vs changed files",
        "",
        data.get("changes", {}).get("note", ""),
        "",
        markdown_table(*tables["changes"]),
        "## Plugin import and configure",
        "",
        markdown_table(*import_rows(data)),
        "## Targets",
        "",
        markdown_table(*tables["targets"]),
    ]
    notes = data.get("notes") or []
    if notes:
        md += ["## Notes", "", *(f"- {n}" for n in notes), ""]
    (out / "results.md").write_text("\n".join(md))
    if proposed:
        keys = [data.get("reference", KERNEL), "bare-ctypes", *(c["key"] for c in proposed)]
        tables["proposals"] = cost_rows(data, keys)
    for name, (header, rows) in tables.items():
        (out / f"{name}.rst").write_text(rst_table(header, rows))
    (out / "import.rst").write_text(rst_table(*import_rows(data)))
    (out / "machine.rst").write_text(
        f"- Machine: {machine['summary']}\n- Command: ``{data['command']}``\n"
        f"- Date: {data['date']}\n"
    )


def import_rows(data: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["Measurement", "median"]
    rows = [[row["label"], fmt_time(row["seconds"])] for row in data.get("import", [])]
    return header, rows


def plot(data: dict[str, Any], path: Path) -> None:
    """Per-test cost against base size, log-log, one line per configuration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5), dpi=80)
    palette = matplotlib.colormaps["tab20"]
    colors = [palette(i) for i in range(20)]
    markers = "osD^v<>ph*Xd"
    shown = [c for c in data["configs"] if not c.get("proposal")]
    for index, config in enumerate(shown):
        xs, ys = [], []
        for base in data["bases"]:
            cell = _cell(data["cells"][base["key"]], config["key"])
            if cell is not None:
                xs.append(base["size_bytes"])
                ys.append(best(cell) * 1e3)
        if not xs:
            continue
        ours = config["key"].startswith("overlay-")
        ax.plot(
            xs,
            ys,
            marker=markers[index % len(markers)],
            color=colors[(2 * index) % 20 if index < 10 else (2 * index + 1) % 20],
            linewidth=2.5 if ours else 1.2,
            linestyle="-" if ours or config["key"].startswith("bare-ctypes") else "--",
            label=config["label"],
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks([b["size_bytes"] for b in data["bases"]])
    ax.set_xticklabels([b["label"].replace(" / ", "\n") for b in data["bases"]])
    ax.set_xlabel("base size")
    ax.set_ylabel("median per-test cost (ms)")
    ax.set_title("Per-test cost of a private, writable view of a base directory")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
