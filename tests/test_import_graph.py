"""No import cycles inside `hf_mtl/` (DESIGN.md, "Layout").

The graph is built from the source with `ast`, without importing anything: an edge A -> B for every
module-level import in A of an `hf_mtl` module B (relative or absolute, inside `try`/`if` blocks too, but
not inside functions or `if TYPE_CHECKING:`, which run later or never). Importing `a.b.c` also runs the
`__init__` of `a` and `a.b`, so those are edges too, except to A's own parent packages, which Python has
already started when A runs. Any strongly connected component of more than one module is a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path


PACKAGE = "hf_mtl"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE


def module_names(root: Path = ROOT) -> dict[str, Path]:
    """{dotted module name: file} of every module of the package (a package is its `__init__`)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _module_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Import statements that run when the module is imported (not in functions, classes' methods or
    `if TYPE_CHECKING:` blocks)."""
    found: list[ast.Import | ast.ImportFrom] = []
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, ast.If):
            test = ast.unparse(node.test)
            pending.extend(node.orelse if test.endswith("TYPE_CHECKING") else node.body + node.orelse)
        elif isinstance(node, (ast.Try, ast.With, ast.ClassDef)):
            for field in ("body", "orelse", "finalbody", "handlers"):
                for child in getattr(node, field, []):
                    pending.extend(child.body if isinstance(child, ast.ExceptHandler) else [child])
    return found


def _targets(node: ast.Import | ast.ImportFrom, name: str, is_package: bool, modules: dict[str, Path]) -> set[str]:
    """The `hf_mtl` modules one import statement of module `name` names."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    if node.level:
        base = name.split(".") if is_package else name.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module or ""
    # `from pkg import x` imports the submodule pkg.x when there is one
    return {source} | {f"{source}.{alias.name}" for alias in node.names if f"{source}.{alias.name}" in modules}


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """{module: the hf_mtl modules its import runs}."""
    modules = module_names(root)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        own_parents = {".".join(name.split(".")[:k]) for k in range(1, name.count(".") + 1)}
        edges = set()
        for node in _module_level_imports(ast.parse(path.read_text(), filename=str(path))):
            for target in _targets(node, name, path.name == "__init__.py", modules):
                parts = target.split(".")
                for k in range(1, len(parts) + 1):  # a.b.c runs a, a.b and a.b.c
                    prefix = ".".join(parts[:k])
                    if prefix in modules and prefix != name and prefix not in own_parents:
                        edges.add(prefix)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _one_cycle(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    """A concrete path start -> ... -> start inside `component`, for the message."""
    members, start = set(component), component[0]
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for succ in sorted(graph[node] & members):
            if succ == start:
                return paths[node] + [start]
            if succ not in paths:
                paths[succ] = paths[node] + [succ]
                queue.append(succ)
    return component


def test_graph_sees_relative_package_and_function_level_imports(tmp_path: Path) -> None:
    pkg = tmp_path / PACKAGE
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("from . import b\n")
    (pkg / "sub" / "b.py").write_text("from .. import a  # at module level\n")
    (pkg / "c.py").write_text("def f():\n    from . import a\nif TYPE_CHECKING:\n    from . import a\n")
    graph = import_graph(pkg)
    assert graph["hf_mtl.a"] == {"hf_mtl.sub", "hf_mtl.sub.b"}
    assert graph["hf_mtl.sub"] == {"hf_mtl.sub.b"}
    assert graph["hf_mtl.sub.b"] == {"hf_mtl.a"}  # its own parents hf_mtl and hf_mtl.sub are not edges
    assert graph["hf_mtl.c"] == set()
    assert cycles(graph) == [["hf_mtl.a", "hf_mtl.sub", "hf_mtl.sub.b"]]


def test_no_import_cycles_inside_hf_mtl() -> None:
    graph = import_graph()
    found = cycles(graph)
    assert not found, "Import cycles inside hf_mtl/ (DESIGN.md: no cycles; lower layers never import higher ones):\n" + (
        "\n".join(" -> ".join(_one_cycle(c, graph)) + f"   (component: {c})" for c in found)
    )


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, pending = set(), [start]
    while pending:
        node = pending.pop()
        for succ in graph.get(node, ()):
            if succ not in seen:
                seen.add(succ)
                pending.append(succ)
    return seen


def test_hub_depends_on_the_store_never_on_modeling() -> None:
    """Issue 21.1: `hf_mtl.hub` moves store folders; only `hf_mtl.modeling` knows the model (a live model's
    `push_to_hub` saves a temporary store and calls `hub.push`). Checked at module level (what importing
    hub runs) and in every import statement of hub.py, inside functions too."""
    graph = import_graph()
    reached = sorted(m for m in _reachable(graph, "hf_mtl.hub") if m.startswith("hf_mtl.modeling"))
    assert not reached, f"importing hf_mtl.hub imports {reached}"
    modules = module_names()
    tree = ast.parse(modules["hf_mtl.hub"].read_text())
    named = {t for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
             for t in _targets(node, "hf_mtl.hub", False, modules)}
    assert not [t for t in named if t.startswith("hf_mtl.modeling")], f"hf_mtl/hub.py imports {sorted(named)}"
