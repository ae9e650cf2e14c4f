"""The package's modules import each other without a circle.

A circle works only while every module in it imports the others inside
functions or in a lucky order; the next top-level import breaks it. The
graph counts every import, those inside functions too, so a circle hidden
in a function is found as well."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "workflow" / "handbone"


def import_graph(folder: Path, package: str = "handbone") -> dict[str, set[str]]:
    """{module: the package's modules it imports}, for every module of a flat package."""
    modules = {path.stem for path in folder.glob("*.py")}
    graph = {}
    for path in sorted(folder.glob("*.py")):
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                # `from . import a, b`, `from .a import x`, `from handbone import a`, `from handbone.a import x`
                if node.level == 1 or node.module == package or (node.module or "").startswith(package + "."):
                    inner = node.module if node.level else (node.module or "").removeprefix(package)
                    inner = (inner or "").lstrip(".")
                    imported |= {inner.split(".")[0]} if inner else {alias.name for alias in node.names}
            elif isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[1] for alias in node.names if alias.name.startswith(package + ".")}
        graph[path.stem] = (imported & modules) - {path.stem}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle (a path back to its start) through each group of modules
    that reach each other (Tarjan's strongly connected components)."""
    order, lowest, stack, on_stack, found = {}, {}, [], set(), []

    def visit(module):
        order[module] = lowest[module] = len(order)
        stack.append(module)
        on_stack.add(module)
        for other in sorted(graph[module]):
            if other not in order:
                visit(other)
                lowest[module] = min(lowest[module], lowest[other])
            elif other in on_stack:
                lowest[module] = min(lowest[module], order[other])
        if lowest[module] == order[module]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == module:
                    break
            if len(group) > 1:
                found.append(_path_within(graph, group, module))

    for module in sorted(graph):
        if module not in order:
            visit(module)
    return found


def _path_within(graph, group: set[str], start: str) -> list[str]:
    """A shortest import path from ``start`` back to itself inside ``group``."""
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for module in frontier:
            for other in sorted(graph[module] & group):
                if other == start:
                    return paths[module] + [start]
                if other not in paths:
                    paths[other] = paths[module] + [other]
                    following.append(other)
        frontier = following
    raise AssertionError(f"no circle through {start} in {sorted(group)}")


def test_no_module_of_the_package_imports_itself_round_a_circle():
    graph = import_graph(PACKAGE)
    assert len(graph) > 30 and "model" in graph["inference"]  # the graph is the package's
    nested = sorted(str(path.relative_to(PACKAGE)) for path in PACKAGE.glob("*/**/*.py"))
    assert nested == [], f"import_graph reads a flat package; extend it to the subpackage modules {nested}"
    found = circles(graph)
    assert found == [], "import circles: " + "; ".join(" -> ".join(circle) for circle in found)


def test_a_circle_closed_inside_a_function_is_found(tmp_path):
    (tmp_path / "a.py").write_text("from .b import helper\n")
    (tmp_path / "b.py").write_text("def helper():\n    from .c import other\n    return other\n")
    (tmp_path / "c.py").write_text("import os\n\ndef other():\n    from handbone import a\n    return a\n")
    (tmp_path / "d.py").write_text("from . import a, c\nimport handbone.b\n")
    graph = import_graph(tmp_path)
    assert graph == {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a", "b", "c"}}
    assert circles(graph) == [["a", "b", "c", "a"]]
