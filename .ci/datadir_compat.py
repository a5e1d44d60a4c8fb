"""Run pytest-datadir's own test suite against pytest-overlay's drop-in (overlay_datadir).

Downloads pytest-datadir's sdist, then runs its tests twice with ``overlay_datadir = true``:
with pytest-datadir uninstalled (its tests' imports of ``pytest_datadir.plugin`` point at
``pytest_overlay`` instead, and ``test_pathlib.py``, which tests a Windows path helper of
pytest-datadir rather than a fixture, is left out), and with it installed (its suite as
it is; the report header must say that pytest-overlay serves the fixtures).

Usage: python .ci/datadir_compat.py [VERSION]   (run with the venv's python)
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VERSION = sys.argv[1] if len(sys.argv) > 1 else "1.9.0"
PIP = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]


def run_suite(tests: Path, expect_header: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-o", "overlay_datadir=true",
         "-v", str(tests)],
        cwd=tests.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    print(result.stdout[-4000:], result.stderr[-2000:], sep="\n")
    if result.returncode != 0:
        sys.exit(f"pytest-datadir's suite failed against the drop-in ({expect_header})")
    if expect_header not in result.stdout:
        sys.exit(f"the report header does not say {expect_header!r}")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="datadir-compat-") as scratch:
        work = Path(scratch)
        subprocess.run(
            [*PIP, "download", "--no-deps", "--no-binary", ":all:", "-d", str(work),
             f"pytest-datadir=={VERSION}"],
            check=True,
        )
        (sdist,) = work.glob("pytest*datadir-*.tar.gz")
        with tarfile.open(sdist) as archive:
            archive.extractall(work, filter="data")
        (source,) = (p for p in work.iterdir() if p.is_dir())
        tests = source / "tests"

        print("::: pytest-datadir uninstalled")
        subprocess.run([*PIP, "uninstall", "-y", "pytest-datadir"], check=True)
        plain = work / "plain" / "tests"
        plain.parent.mkdir()
        subprocess.run(["cp", "-a", str(tests), str(plain)], check=True)
        (plain / "test_pathlib.py").unlink()
        for module in plain.glob("test_*.py"):
            text = module.read_text().replace(
                "from pytest_datadir.plugin import LazyDataDir",
                "from pytest_overlay import LazyDataDir",
            )
            module.write_text(text)
        run_suite(plain, "datadir fixtures: pytest-overlay")

        print(f"::: pytest-datadir {VERSION} installed")
        subprocess.run([*PIP, "install", f"pytest-datadir=={VERSION}"], check=True)
        try:
            run_suite(tests, "datadir fixtures: pytest-overlay (not pytest-datadir)")
        finally:
            subprocess.run([*PIP, "uninstall", "-y", "pytest-datadir"], check=True)


if __name__ == "__main__":
    main()
