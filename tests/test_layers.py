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


def test_analysis_imports_neither_torch_nor_hydra_nor_the_plugins():
    code = ("import importlib, json, sys\n"
            "seen = {}\n"
            f"for m in {ANALYSIS!r}:\n"
            "    importlib.import_module(m)\n"
            "    seen[m] = sorted(k for k in sys.modules\n"
            "                     if k.split('.')[0] in ('torch', 'hydra_plugins', 'hydra', 'omegaconf'))\n"
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


def test_no_two_analysis_modules_import_each_other():
    """The import graph of analysis/ (deferred imports too) has no circle: each stage sits on the ones below it."""
    graph = {}
    for m in ANALYSIS:
        tree = ast.parse((ROOT / (m.replace(".", "/") + ".py")).read_text())
        deps = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "analysis":
                deps |= {f"analysis.{a.name}" for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("analysis."):
                deps.add(node.module)
        graph[m] = deps & set(ANALYSIS)

    def circle(node, path):
        for dep in sorted(graph[node]):
            if dep in path:
                return [*path[path.index(dep):], dep]
            if found := circle(dep, [*path, dep]):
                return found
        return None

    found = next((c for m in ANALYSIS if (c := circle(m, [m]))), None)
    assert found is None, "import circle: " + " -> ".join(found)
