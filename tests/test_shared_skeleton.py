"""The method files share their skeleton verbatim: every `# ===... shared: <name>` block up to
`# ===... end shared` must read the same in each of them, so a fix lands in all four or none."""
import itertools
import re
from pathlib import Path

import pytest

from conftest import ROOT

METHOD_FILES = [ROOT / name for name in ("bct.py", "act.py", "mlpct.py", "attct.py") if (ROOT / name).exists()]
BLOCK = re.compile(r"^[ \t]*# =+ shared: (?P<name>[^\n]+)\n(?P<body>.*?)^[ \t]*# =+ end shared$", re.M | re.S)


def shared_blocks(text: str) -> dict[str, str]:
    blocks = {}
    for m in BLOCK.finditer(text):
        assert m["name"] not in blocks, f"shared block {m['name']!r} appears twice"
        blocks[m["name"]] = m["body"]
    return blocks


def drift(a: Path, b: Path) -> list[str]:
    """What differs between the shared blocks of two files (empty when they agree)."""
    blocks_a, blocks_b = shared_blocks(a.read_text()), shared_blocks(b.read_text())
    problems = [f"block {name!r} is in only one of {a.name}, {b.name}" for name in blocks_a.keys() ^ blocks_b.keys()]
    problems += [f"block {name!r} differs between {a.name} and {b.name}"
                 for name in blocks_a.keys() & blocks_b.keys() if blocks_a[name] != blocks_b[name]]
    return problems


def test_method_files_have_shared_blocks():
    assert METHOD_FILES, "no method file found"
    for path in METHOD_FILES:
        assert shared_blocks(path.read_text()), f"{path.name} has no shared block"


@pytest.mark.parametrize("a,b", list(itertools.combinations(METHOD_FILES, 2)), ids=lambda p: p.name)
def test_shared_blocks_identical(a, b):
    assert drift(a, b) == []


def test_drift_is_caught(tmp_path):
    original = METHOD_FILES[0]
    text = original.read_text()
    name, body = next(iter(shared_blocks(text).items()))
    edited = tmp_path / "edited.py"
    edited.write_text(text.replace(body, body.replace("\n", "\n    # a local edit\n", 1), 1))
    assert drift(original, edited) == [f"block {name!r} differs between {original.name} and edited.py"]
    dropped = tmp_path / "dropped.py"
    dropped.write_text(text.replace(f"shared: {name}", "local block", 1))
    assert drift(original, dropped) == [f"block {name!r} is in only one of {original.name}, dropped.py"]
