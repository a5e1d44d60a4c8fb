"""The overlay_base ini key: one path per line, spaces and all, as the docs say."""

from __future__ import annotations

import pytest

from tests.helpers import make_tree

pytest_plugins = ["pytester"]

_TEST = (
    "def test_it(overlay_stack):\n"
    "    assert (overlay_stack.merged / 'who').read_text() == {who!r}\n"
    "    assert [p.name for p in overlay_stack.lowers] == {names!r}\n"
)


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    make_tree(pytester.path / "my data", {"who": "spaced", "a": "a"})
    make_tree(pytester.path / "base", {"who": "base", "b": "b"})
    return pytester


def test_a_path_with_spaces_is_one_layer(project: pytest.Pytester) -> None:
    project.makeini("[pytest]\noverlay_base = my data\n")
    project.makepyfile(_TEST.format(who="spaced", names=["my data"]))
    project.runpytest().assert_outcomes(passed=1)


def test_one_path_per_line_with_spaces(project: pytest.Pytester) -> None:
    project.makeini("[pytest]\noverlay_base =\n    my data\n    base\n")
    project.makepyfile(_TEST.format(who="spaced", names=["my data", "base"]))
    project.runpytest().assert_outcomes(passed=1)


def test_a_quoted_path_still_works(project: pytest.Pytester) -> None:
    # Before one-path-per-line, quoting was the only way to write a space.
    project.makeini("[pytest]\noverlay_base =\n    'my data'\n    \"base\"\n")
    project.makepyfile(_TEST.format(who="spaced", names=["my data", "base"]))
    project.runpytest().assert_outcomes(passed=1)


def test_a_toml_list_is_one_layer_per_item(project: pytest.Pytester) -> None:
    project.makepyprojecttoml('[tool.pytest.ini_options]\noverlay_base = ["my data", "base"]\n')
    project.makepyfile(_TEST.format(who="spaced", names=["my data", "base"]))
    project.runpytest().assert_outcomes(passed=1)


def test_relative_to_the_configuration_file(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    project.makeini("[pytest]\noverlay_base = my data\n")
    sub = project.mkdir("sub")
    (sub / "test_it.py").write_text(_TEST.format(who="spaced", names=["my data"]))
    monkeypatch.chdir(sub)  # "my data" is not here but next to tox.ini
    project.runpytest().assert_outcomes(passed=1)


def test_several_paths_on_one_line_say_to_put_one_per_line(project: pytest.Pytester) -> None:
    # Whitespace used to separate layers; such a line now names a directory that does
    # not exist, and the error says what changed.
    project.makeini("[pytest]\noverlay_base = base my\n")
    make_tree(project.path / "my", {})
    project.makepyfile(_TEST.format(who="base", names=["base", "my"]))
    result = project.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*overlay_base: 'base my' does not exist*one path per line*", "*    base*", "*    my*"]
    )
