"""Packaging and layering: one import root, imports only run downwards."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from _support import REPO

# Which tooliqa sub-packages each source folder may import.
ALLOWED = {
    "tools": set(),
    "graph": {"tools"},
    "tooliqa": {
        "tools",
        "graph",
        "backends",
        "api",
        "cli",
        "data",
        "eval",
        "failures",
        "agent_tool",
    },
}


def _tooliqa_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "tooliqa" and len(parts) > 1:
                found.add(parts[1])
            elif parts[0] in ("graph", "tools", "training", "ui"):
                found.add(f"top-level {parts[0]}")
    return found


@pytest.mark.parametrize("folder", sorted(ALLOWED))
def test_imports_only_run_downwards(folder):
    bad = {}
    for path in sorted((REPO / folder).rglob("*.py")):
        allowed = ALLOWED[folder]
        if path == REPO / "tooliqa" / "cli.py":  # the entry point may launch the top layers, lazily
            allowed = allowed | {"ui", "training"}
        extra = _tooliqa_imports(path) - allowed
        if extra:
            bad[str(path.relative_to(REPO))] = sorted(extra)
    assert not bad, f"imports against the layering: {bad}"


def _module_level_imports(path: Path) -> set[str]:
    """tooliqa sub-packages imported at module level (not inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tooliqa."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("tooliqa.")}
    return found


def test_nothing_imports_training_or_ui():
    """The top layers are reached only lazily, from the CLI entry point that launches them."""
    for folder in ("tools", "graph", "tooliqa"):
        for path in (REPO / folder).rglob("*.py"):
            if path == REPO / "tooliqa" / "cli.py":
                assert not _module_level_imports(path) & {"training", "ui"}, path
                continue
            assert not _tooliqa_imports(path) & {"training", "ui"}, path
    code = "import sys, tooliqa.cli; tooliqa.cli.build_parser(); print('gradio' in sys.modules, 'tooliqa.ui' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/"
    )
    assert out.stdout.split() == ["False", "False"]


def test_importing_the_graph_does_not_pull_in_the_application_layer():
    code = (
        "import sys, tooliqa.graph; "
        "print(sorted(m for m in sys.modules if m.startswith(('tooliqa.api', 'tooliqa.backends', 'tooliqa.cli', 'gradio', 'trl', 'vllm'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/"
    )
    assert out.stdout.strip() == "[]"


def test_wheel_has_one_import_root(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("tooliqa-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    roots = {n.split("/")[0] for n in names}
    assert {r for r in roots if not r.endswith(".dist-info")} == {"tooliqa"}
    for module in (
        "graph/nodes.py",
        "tools/views.py",
        "backends/classic.py",
        "data/classic_calibration.json",
        "py.typed",
    ):
        assert f"tooliqa/{module}" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "tooliqa = tooliqa.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_langgraph_json_points_at_a_compiled_graph():
    spec = json.loads((REPO / "langgraph.json").read_text())
    path, attr = spec["graphs"]["tooliqa"].split(":")
    assert (REPO / path).exists() and attr == "graph"
    from tooliqa.api import graph

    assert set(graph.get_graph().nodes) >= {"observe", "decide", "tool", "quantify", "finalize"}
