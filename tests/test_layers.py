"""The layers: `scaling` (the library) never imports `analysis` or the plugins, and `analysis` never
imports torch or the plugins (it runs on a laptop with a folder of records; STYLE.md)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys

import pytest
from conftest import ROOT

ANALYSIS = sorted(f"analysis.{p.stem}" for p in (ROOT / "analysis").glob("*.py") if p.stem != "__init__")
SCALING = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "scaling").glob("*.py"))
ABOVE_SCALING = ("analysis", "hydra_plugins", "tools")  # the stages, plugins and tools built on the library


def imported(path: str) -> set[str]:
    """Top-level package of every import in a file, deferred imports inside functions included."""
    names = set()
    for node in ast.walk(ast.parse((ROOT / path).read_text(), path)):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_analysis_imports_neither_torch_nor_the_plugins():
    code = ("import importlib, json, sys\n"
            "seen = {}\n"
            f"for m in {ANALYSIS!r}:\n"
            "    importlib.import_module(m)\n"
            "    seen[m] = sorted(k for k in sys.modules if k.split('.')[0] in ('torch', 'hydra_plugins'))\n"
            "print(json.dumps(seen))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    seen = json.loads(out.stdout)
    assert set(seen) == set(ANALYSIS) and len(ANALYSIS) > 5
    first = next((m for m in ANALYSIS if seen[m]), None)
    assert first is None, f"importing {first} imports {', '.join(seen[first][:5])}"


@pytest.mark.parametrize("path", SCALING)
def test_scaling_imports_nothing_above_it(path):
    up = imported(path) & set(ABOVE_SCALING)
    assert not up, f"{path} imports {', '.join(sorted(up))}: the library must not depend on what is built on it"
