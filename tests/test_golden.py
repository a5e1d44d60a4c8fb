"""The golden-file format: stable lines, quoting, file locations, compare and update."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from pytest_overlay._layers.statediff import ChainState, DirState, diff_states, touched
from pytest_overlay._plugin import golden as _golden
from tests.helpers import make_tree

pytestmark = pytest.mark.usefixtures("fixed_umask")


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        ("plain/path.txt", "plain/path.txt"),
        ("ünï/кот", "ünï/кот"),
        ("with space", '"with space"'),
        ('quo"te', '"quo\\"te"'),
        ("new\nline", '"new\\nline"'),
        ("bad\udcffbyte", '"bad\\udcffbyte"'),
        ("->", '"->"'),
        ("", '""'),
    ],
)
def test_quote(text: str, quoted: str) -> None:
    assert _golden.quote(text) == quoted


def test_render_is_stable_and_machine_independent(tmp_path: Path) -> None:
    old = make_tree(tmp_path / "old", {"keep": "k", "gone": "g", "mod.txt": "v1"})
    new = make_tree(
        tmp_path / "new",
        {"keep": "k", "mod.txt": "v2", "d": {"f": "data"}, "l": ("symlink", "d/f")},
    )
    os.chmod(new / "mod.txt", 0o600)
    os.chmod(new / "d", 0o750)
    lines = _golden.render(diff_states(ChainState([old]), DirState(new), touched([old, new])))
    digest = hashlib.sha256(b"data").hexdigest()
    assert lines == [
        "A d  dir 0750",
        f"A d/f  file 0644 size=4 sha256={digest}",
        "D gone",
        "A l  symlink -> d/f",
        f"M mod.txt  file 0600 size=2 sha256={hashlib.sha256(b'v2').hexdigest()}",
    ]
    assert str(tmp_path) not in "\n".join(lines)


def test_path_for_names_files_next_to_the_test(tmp_path: Path) -> None:
    test_file = tmp_path / "tests" / "test_x.py"
    where = tmp_path / "tests" / "__overlay_golden__" / "test_x"
    nodeid = "tests/test_x.py::TestA::test_y[a/b c]"
    assert _golden.path_for(test_file, nodeid, None, 1) == where / "TestA.test_y[a_b_c].txt"
    assert _golden.path_for(test_file, nodeid, None, 2) == where / "TestA.test_y[a_b_c].2.txt"
    assert (
        _golden.path_for(test_file, nodeid, "after", 3) == where / "TestA.test_y[a_b_c].after.txt"
    )
    with pytest.raises(ValueError, match="plain file name part"):
        _golden.path_for(test_file, nodeid, "../escape", 1)


def test_check_create_compare_update(tmp_path: Path) -> None:
    path = tmp_path / "g" / "t.txt"
    lines = ["A x  file 0644 size=0 sha256=e3b0"]
    assert _golden.check(path, lines, "t.py::t", update=False) is _golden.Outcome.MISSING
    assert not path.exists()
    assert _golden.check(path, lines, "t.py::t", update=True) is _golden.Outcome.WRITTEN
    text = path.read_text()
    assert text.startswith("# pytest-overlay golden file")
    assert text.endswith("A x  file 0644 size=0 sha256=e3b0\n")
    assert _golden.check(path, lines, "t.py::t", update=False) is _golden.Outcome.MATCHES
    # Comments and blank lines are for people; only entries are compared.
    path.write_text("# reviewed by me\n\n" + lines[0] + "\n")
    assert _golden.check(path, lines, "other.py::t", update=False) is _golden.Outcome.MATCHES
    assert _golden.check(path, ["D x"], "t.py::t", update=False) is _golden.Outcome.DIFFERS
    assert _golden.check(path, lines, "t.py::t", update=True) is _golden.Outcome.MATCHES
    assert path.read_text().startswith("# reviewed by me")  # not rewritten when equal
