"""scripts/: every name a script imports from sst2 exists. The scripts import most of sst2 inside the
functions that need it, so a renamed or moved name breaks a script only when that part runs, often deep
in a benchmark (scripts/loadtest.py --wrk once failed at its in-process reference this way)."""

import ast
import importlib
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).resolve().parents[1] / "scripts").glob("*.py"))


def sst2_imports(path: Path) -> list[tuple[int, str, str | None]]:
    """(line, module, name) of every ``import sst2...`` (name None) and ``from sst2... import name``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "sst2":
            found += [(node.lineno, node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name, None) for a in node.names if a.name.split(".")[0] == "sst2"]
    return found


def missing(module: str, name: str | None) -> str | None:
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        return f"{module}: {exc}"
    if name is None or hasattr(mod, name):
        return None
    try:  # a submodule: from sst2 import inference
        importlib.import_module(f"{module}.{name}")
    except ImportError:
        return f"{module} has no {name}"
    return None


def test_the_check_sees_a_missing_name(tmp_path):
    script = tmp_path / "s.py"
    script.write_text("def f():\n    from sst2.inference import Classifier\n    from sst2 import SentimentClassifier\n")
    found = sst2_imports(script)
    assert found == [(2, "sst2.inference", "Classifier"), (3, "sst2", "SentimentClassifier")]
    assert [missing(m, n) for _, m, n in found] == ["sst2.inference has no Classifier", None]


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_every_sst2_name_a_script_imports_exists(script):
    problems = [f"{script.name}:{line}: {why}" for line, module, name in sst2_imports(script)
                if (why := missing(module, name))]
    assert not problems
