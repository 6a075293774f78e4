"""The package's import graph (scripts/import_graph.py): no circles, nothing below dltrain.cli imports it,
no private Hydra API; and the checker itself finds a circle when there is one."""
from __future__ import annotations

import importlib.util

from tests.conftest import ROOT


def checker():
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_import_graph_has_no_circle_and_no_upward_import():
    assert checker().problems() == []


def test_the_checker_finds_circles():
    graph = checker()
    assert graph.cycles({"dltrain.a": {"dltrain.b"}, "dltrain.b": {"dltrain.c"}, "dltrain.c": {"dltrain.a"},
                         "dltrain.d": {"dltrain.a"}}) == [["dltrain.a", "dltrain.b", "dltrain.c"]]
    edges, _ = graph.graph()
    assert "dltrain.trainer" in edges["dltrain.cli.jobs"] and "dltrain.step" in edges["dltrain.trainer"]
