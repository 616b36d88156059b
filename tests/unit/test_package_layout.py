"""The package's layout rules (docs/architecture.md), checked on the source: no import cycle
between modules (lazy imports inside functions count: they only hide a cycle), and no stage
imports a later stage (data -> detect -> align -> embed -> match -> evaluate -> export; core imports none)."""

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "src" / "flukeline"
STAGES = ["core", "data", "detect", "align", "embed", "match", "evaluate", "export"]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """Every flukeline module `path` imports, anywhere in the file ("from pkg import mod" counts
    as importing pkg.mod when that is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("flukeline")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("flukeline"):
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in modules else node.module)
    return found & modules


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(paths)
    # A package's __init__ importing its own submodules (a registry) is not a cycle with them.
    return {m: {i for i in imports_of(p, modules) if not m.startswith(i + ".") and i != m} for m, p in paths.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle():
    assert cycles(import_graph()) == []


def stage_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in STAGES else None


def test_no_stage_imports_a_later_stage():
    later = []
    for module, imported in import_graph().items():
        stage = stage_of(module)
        if stage is None:
            continue  # cli, gallery, review, catalogue, annotate: tools built on top of the stages
        for other in imported:
            other_stage = stage_of(other)
            if other_stage is not None and STAGES.index(other_stage) > STAGES.index(stage):
                later.append(f"{module} imports {other}")
    assert later == []
