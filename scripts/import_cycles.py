"""List the import cycles among gridlearn's modules (issue 17 step 7).

Every ``import``/``from ... import`` is counted, wherever it stands: at module level,
inside a function (a deferred import hides a cycle, it does not remove it) and under
``if TYPE_CHECKING:`` (except a deprecated shim, see SHIMS). A package ``__init__`` that only re-exports lazily imports nothing.
Prints each strongly connected component of more than one module; exits 1 if any.

    python scripts/import_cycles.py
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# An import whose line above says "deprecated shim" (a deferred import kept for one
# release behind an old name that warns) is listed apart, not counted as an edge.
SHIMS: list[str] = []


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    tree = ast.parse(source, str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, (ast.Import, ast.ImportFrom)) and "deprecated shim" in lines[node.lineno - 2]:
            SHIMS.append(f"{name} (line {node.lineno})")
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        for t in targets:
            # the module itself, or the nearest enclosing module we know
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one member."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def main() -> int:
    files = sorted((ROOT / "gridlearn").rglob("*.py"))
    known = {module_name(p) for p in files}
    # Importing a package runs its __init__; a lazy-export __init__ imports nothing of its own.
    graph = {module_name(p): imports_of(p, module_name(p), known) for p in files}
    for name in graph:
        graph[name] = {t for t in graph[name] if not (name.startswith(t + ".") and t in known)}
    found = cycles(graph)
    for comp in found:
        edges = [f"{a} -> {b}" for a in comp for b in sorted(graph[a]) if b in comp]
        print(f"cycle of {len(comp)} modules: {', '.join(comp)}")
        for e in edges:
            print(f"    {e}")
    for shim in SHIMS:
        print(f"deprecated shim, not counted (removed next release): {shim}")
    print(f"{len(found)} import cycle(s) among {len(graph)} modules")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
