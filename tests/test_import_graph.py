"""The package's import graph: subpackages import one another in one direction (no cycle, counting imports inside
functions too, which hide a cycle from Python but not from a reader), and never a `_private` name of another
subpackage (a private name is free to change without notice; what another subpackage needs, it exports)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "basisfm"
ROOT = Path(__file__).resolve().parents[1] / "platform" / PACKAGE


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _subpackage(module: str) -> str:
    """`basisfm.X.y` -> "X" (a top-level module `basisfm.config` is its own unit, "config")."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path, module: str) -> list[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) for every import in the file of `module`, at any depth."""
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, None, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against this module's package
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            found += [(base, alias.name, node.lineno) for alias in node.names]
    return found


def _edges():
    """{(from subpackage, to subpackage): [where]} and [private imports across subpackages]."""
    edges: dict[tuple[str, str], list[str]] = {}
    private = []
    for path in sorted(ROOT.rglob("*.py")):
        module = _module_name(path)
        source = _subpackage(module)
        for target, name, line in _imports(path, module):
            if target != PACKAGE and not target.startswith(PACKAGE + "."):
                continue
            if target == PACKAGE and name is not None:  # `from basisfm import X`: X is the unit
                target = f"{PACKAGE}.{name}"
                name = None
            destination = _subpackage(target)
            where = f"{path.relative_to(ROOT.parent)}:{line}"
            if not destination or destination == source:
                continue
            edges.setdefault((source, destination), []).append(where)
            last = target.split(".")[-1]
            if (name is not None and name.startswith("_") and not name.startswith("__")) or (last.startswith("_") and not last.startswith("__")):
                private.append(f"{where} imports {target}{'.' + name if name else ''}")
    return edges, private


def _cycles(edges) -> list[list[str]]:
    """Every strongly connected set of more than one subpackage (Tarjan), each as a sorted list."""
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return out


def test_subpackages_import_in_one_direction():
    edges, _ = _edges()
    cycles = _cycles(edges)
    detail = []
    for cycle in cycles:
        for (a, b), where in sorted(edges.items()):
            if a in cycle and b in cycle:
                detail.append(f"  {a} -> {b}: {', '.join(where[:3])}")
    assert not cycles, "import cycles between subpackages: " + str(cycles) + "\n" + "\n".join(detail)


def test_no_private_name_is_imported_from_another_subpackage():
    _, private = _edges()
    assert not private, "private names imported across subpackages:\n  " + "\n  ".join(private)


def test_the_graph_sees_function_level_imports(tmp_path):
    # The checker itself: an import inside a function counts (that is where cycles hide).
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from basisfm.model import build_model\n", encoding="utf-8")
    assert ("basisfm.model", "build_model", 2) in _imports(source, "basisfm.tune.m")
    assert _cycles({("a", "b"): [], ("b", "c"): [], ("c", "a"): [], ("c", "d"): []}) == [["a", "b", "c"]]
