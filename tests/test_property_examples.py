"""The property-testing examples can fail: a planted bug in each is found and shrunk.

An example that always passes proves nothing about the code it tests. Each test here
plants a realistic bug in the code under test of one example in ``examples/`` and checks
that the example's own property finds it and shrinks it to a minimal counterexample.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import Phase, settings
from hypothesis.stateful import run_state_machine_as_test

pytest_plugins = ["pytester"]

EXAMPLES = Path(__file__).parent.parent / "examples"


def load_example(name: str) -> ModuleType:
    """A private copy of ``examples/<name>.py``, so patching it touches no other test."""
    spec = importlib.util.spec_from_file_location(f"planted_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def copy_migrator_example(pytester: pytest.Pytester) -> None:
    # Under another name: the suite itself may have imported examples/ under this one, and
    # an in-process pytester run would refuse a second module of the same name.
    shutil.copytree(EXAMPLES / "configs", pytester.path / "configs")
    shutil.copy(EXAMPLES / "test_property_migrator.py", pytester.path / "test_planted.py")


# A parser that splits at every "=", so a value that contains one is cut short.
SPLITS_AT_EVERY_EQUALS = """
import pytest

def parse_ini(text):
    settings = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            key, value = line.split("=")[:2]
            settings[key.strip()] = value.strip()
    return settings

@pytest.fixture(autouse=True, scope="module")
def plant(request):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(request.module, "parse_ini", parse_ini)
        yield
"""


def test_the_migrator_example_finds_a_value_cut_at_its_equals_sign(
    pytester: pytest.Pytester,
) -> None:
    copy_migrator_example(pytester)
    pytester.makeconftest(SPLITS_AT_EVERY_EQUALS)
    result = pytester.runpytest("-p", "no:cacheprovider", "--hypothesis-seed=0")
    result.assert_outcomes(failed=1, passed=1)
    # Shrunk to one config file with one setting whose value is just "=": Hypothesis
    # prints the tree it ended on.
    result.stdout.re_match_lines(
        [
            r".*(Failing test case|Falsifying example): test_migration_keeps_every_setting\(",
            r".*tree=\{'app.ini': \{'_': '='\}\},",
        ]
    )
    result.stdout.fnmatch_lines(["*AssertionError: app.toml does not hold app.ini's settings*"])
    # Every example started from the base, so the failure is the bug, not a leak.
    result.stdout.no_fnmatch_line("E * == ['app.ini', 'docs/readme.txt', 'plugins/cache.ini']")


def test_the_migrator_example_passes_without_the_bug(pytester: pytest.Pytester) -> None:
    # The same run without the plant: the failure above is the bug's.
    copy_migrator_example(pytester)
    result = pytester.runpytest("-p", "no:cacheprovider", "--hypothesis-seed=0")
    result.assert_outcomes(passed=2)


def shrunk_failure(machine: type) -> tuple[AssertionError, list[str]]:
    """Run *machine* until it fails; return the shrunk failure and its script."""
    with pytest.raises(AssertionError) as failure:
        run_state_machine_as_test(
            machine,
            settings=settings(
                max_examples=100,
                stateful_step_count=15,
                deadline=None,
                derandomize=True,
                database=None,
                report_multiple_bugs=False,
                # Not the explain phase: it traces every line and takes minutes here.
                phases=[Phase.generate, Phase.shrink],
            ),
        )
    return failure.value, list(getattr(failure.value, "__notes__", []))


def test_the_layer_example_finds_a_whiteout_that_spares_directories(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    example = load_example("test_property_layers")

    def delete_files_only(directory: Path, name: str) -> None:
        path = directory / name
        if path.is_symlink() or path.is_file():
            path.unlink()

    monkeypatch.setattr(example, "apply_whiteout", delete_files_only)
    error, notes = shrunk_failure(example.FlattenMachine)
    script = "\n".join(notes)
    # Found as a merged view with a directory the model says is deleted...
    assert "merged view differs from the model" in str(error), script
    assert re.search(r"'[^']*': expected None, got Dir\(", str(error)), str(error)
    # ...and shrunk to a start state alone: two lowers, a whiteout over a directory,
    # no operation at all.
    (lowers,) = [line for line in notes if line.startswith("fs = UnionModel(")]
    assert lowers.count("Layer(") == 2, lowers
    assert "WHITEOUT" in lowers, lowers
    assert "Dir(" in lowers, lowers
    assert not [line for line in notes if line.startswith("fs.")], script


def test_the_layer_example_passes_without_the_bug() -> None:
    example = load_example("test_property_layers")
    run_state_machine_as_test(
        example.FlattenMachine,
        settings=settings(max_examples=30, stateful_step_count=15, deadline=None, database=None),
    )
