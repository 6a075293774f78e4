"""The package's import graph, from the source (no module is imported): which dltrain module imports which,
counting imports inside functions too (a lazy import is a dependency all the same).

    python scripts/import_graph.py          # prints the graph, then the checks; exits 1 if one fails

Checks: no import circle between modules; nothing outside `dltrain.cli` imports `dltrain.cli` (the entry layer
sits on top); no module imports Hydra's private `hydra._internal`. `from dltrain import x` counts as an
import of the module `dltrain.x`; the package's own `__init__` (the public API) is left out of the circles,
since every module sits below it.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, modules: set[str]) -> tuple[set[str], set[str]]:
    """(dltrain modules this file imports, other top-level names it imports)."""
    ours, others = set(), set()
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from dltrain import memory` imports the module dltrain.memory; `from dltrain.x import f`, dltrain.x
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                     for a in node.names]
        else:
            continue
        for name in names:
            if name.startswith("dltrain"):
                # the longest prefix that is a module: `from dltrain.x import f` → dltrain.x
                while name not in modules and "." in name:
                    name = name.rsplit(".", 1)[0]
                if name in modules:
                    ours.add(name)
            else:
                others.add(name)
    ours.discard(module_name(path))
    return ours, others


def graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    files = sorted((SRC / "dltrain").rglob("*.py"))
    modules = {module_name(p) for p in files}
    edges, foreign = {}, {}
    for path in files:
        edges[module_name(path)], foreign[module_name(path)] = imports(path, modules)
    return edges, foreign


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), the public API left out."""
    nodes = [n for n in edges if n != "dltrain"]
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w == "dltrain":
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(10000)
    for v in nodes:
        if v not in index:
            visit(v)
    return out


def problems() -> list[str]:
    edges, foreign = graph()
    found = [f"import circle: {' <-> '.join(c)}" for c in cycles(edges)]
    for module, targets in sorted(edges.items()):
        if not module.startswith("dltrain.cli"):
            found += [f"upward import: {module} -> {t}" for t in sorted(targets) if t.startswith("dltrain.cli")]
    for module, names in sorted(foreign.items()):
        found += [f"private Hydra API: {module} imports {n}" for n in sorted(names) if n.startswith("hydra._internal")]
    return found


def main() -> int:
    edges, _ = graph()
    width = max(map(len, edges))
    for module in sorted(edges):
        print(f"{module:<{width}}  -> {', '.join(sorted(edges[module])) or '-'}")
    found = problems()
    print()
    print("\n".join(found) if found else "no import circles, nothing below dltrain.cli imports it, no hydra._internal")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
