"""The package's import graph, read from the source with ``ast`` (no module is imported: no torch).

Every import counts: at module level, inside a function, or under ``if TYPE_CHECKING:`` (a deferred
import hides a dependency, it does not remove it). A package's ``__init__`` is a module of its own, and
``from . import x`` where ``x`` is a submodule imports ``x``.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "tune_cifar"


@cache
def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under tune_cifar/ (``a.b`` for ``a/b/__init__.py``)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path) -> list[tuple[str, int]]:
    """(imported module, line) of every import in the file: ``import a.b`` gives ``a.b``; ``from a import b``
    gives ``a.b`` if that is a module of ours, else ``a``; relative imports resolved. (Importing ``a.b``
    first runs ``a/__init__.py``; that implicit step is no edge, or every package would be a circle.)"""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module
            for alias in node.names:  # a submodule (from . import x), else a name of the module `source`
                sub = f"{source}.{alias.name}"
                out.append((sub if sub in modules() else source, node.lineno))
    return out


def _ours(imported: str) -> str | None:
    """The module of tune_cifar an import loads (the longest known prefix of its dotted name), if any."""
    known = modules()
    while imported and imported not in known:
        imported = imported.rpartition(".")[0]
    return imported or None


@cache
def graph() -> dict[str, dict[str, int]]:
    """Module -> {module of tune_cifar it imports: first line}."""
    out = {}
    for name, path in modules().items():
        edges: dict[str, int] = {}
        for imported, line in _imports(name, path):
            target = _ours(imported)
            if target is not None and target != name:
                edges.setdefault(target, line)
        out[name] = edges
    return out


def external(name: str) -> set[str]:
    """Top-level names of the packages outside tune_cifar a module imports (anywhere in the file)."""
    return {imported.split(".")[0] for imported, _ in _imports(name, modules()[name])
            if imported.split(".")[0] != "tune_cifar" and _ours(imported) is None} - {"__future__"}


def reachable(start: str) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for nxt in graph()[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def _cycles() -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each as one loop's files."""
    g, index, low, stack, on_stack, found = graph(), {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in g[v]:
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
                found.append(sorted(component))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return found


def _describe(component: list[str]) -> str:
    g, files = graph(), modules()
    lines = [f"{a} -> {b} ({files[a].relative_to(PACKAGE.parent)}:{g[a][b]})"
             for a in component for b in sorted(g[a]) if b in component]
    return "import circle through " + ", ".join(str(files[m].relative_to(PACKAGE.parent)) for m in component) + \
        ":\n    " + "\n    ".join(lines)


def test_the_graph_sees_every_kind_of_import():
    """The parser finds what the checks below rely on (else they could pass on an empty graph)."""
    g = graph()
    assert len(g) > 50 and "tune_cifar.search" in g and "tune_cifar.search.cli" in g["tune_cifar.search"]
    assert "tune_cifar.data.module" in g["tune_cifar.data"]  # from . import module, inside a function
    assert "tune_cifar.fault_injection" in g["tune_cifar.faults"]  # deferred, inside a function
    assert "tune_cifar.sections" in g["tune_cifar.optim"]  # under TYPE_CHECKING


def test_no_import_circles():
    cycles = _cycles()
    assert not cycles, "\n".join(_describe(c) for c in cycles)


def test_ray_only_in_the_search_package():
    """README: Ray only in tune_cifar/search/ (the training core and predict import no Ray, not even lazily)."""
    outside = sorted(m for m in modules() if not m.startswith("tune_cifar.search") and "ray" in external(m))
    assert not outside, f"these modules outside tune_cifar/search/ import Ray: {outside}"


def test_predict_reaches_no_ray_or_lightning():
    """README: predict imports neither Ray nor Lightning: nothing it imports, at any depth and in any function."""
    heavy = {"ray", "pytorch_lightning", "lightning"}
    bad = {m: sorted(external(m) & heavy) for m in sorted(reachable("tune_cifar.predict")) if external(m) & heavy}
    assert not bad, f"predict reaches modules importing Ray or Lightning: {bad}"
