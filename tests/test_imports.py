"""The package's modules import each other without a circle.

A circle works only while every module in it imports the others inside
functions or in a lucky order; the next top-level import breaks it. The
graph (tests/package_imports.py, which test_dvc_stage.py reads the
package's imports with too) counts every import, those inside functions
too, so a circle hidden in a function is found as well, and every module,
those of subpackages too."""

from package_imports import PACKAGE, import_graph


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
    graph = import_graph()
    assert len(graph) > 30 and "model.py" in graph["inference.py"]  # the graph is the package's
    files = sorted(path.relative_to(PACKAGE).as_posix() for path in PACKAGE.glob("**/*.py"))
    assert sorted(graph) == files, "import_graph must read every module of the package, its subpackages' too"
    found = circles(graph)
    assert found == [], "import circles: " + "; ".join(" -> ".join(circle) for circle in found)


def test_a_circle_closed_inside_a_function_is_found(tmp_path):
    (tmp_path / "a.py").write_text("from .b import helper\n")
    (tmp_path / "b.py").write_text("def helper():\n    from .c import other\n    return other\n")
    (tmp_path / "c.py").write_text("import os\n\ndef other():\n    from handbone import a\n    return a\n")
    (tmp_path / "d.py").write_text("from . import a, c\nimport handbone.b\n")
    graph = import_graph(tmp_path)
    assert graph == {"a.py": {"b.py"}, "b.py": {"c.py"}, "c.py": {"a.py"}, "d.py": {"a.py", "b.py", "c.py"}}
    assert circles(graph) == [["a.py", "b.py", "c.py", "a.py"]]


def test_a_circle_through_a_subpackage_is_found(tmp_path):
    """A subpackage's modules and __init__ are read, their relative imports
    resolved; importing a subpackage's module runs its __init__ first."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.py").write_text("def f():\n    from .sub.b import g\n    return g\n")
    (tmp_path / "sub" / "__init__.py").write_text("from .b import g\n")
    (tmp_path / "sub" / "b.py").write_text("from . import d\nfrom .. import c\n\ndef g():\n    return c, d\n")
    (tmp_path / "sub" / "d.py").write_text("import os\n")
    (tmp_path / "c.py").write_text("import handbone.a\n")
    graph = import_graph(tmp_path)
    assert graph == {
        "a.py": {"sub/__init__.py", "sub/b.py"},
        "c.py": {"a.py"},
        "sub/__init__.py": {"sub/b.py"},
        "sub/b.py": {"c.py", "sub/d.py"},
        "sub/d.py": set(),
    }
    assert circles(graph) == [["a.py", "sub/b.py", "c.py", "a.py"]]


def test_a_module_importing_from_its_own_package_closes_a_circle_only_through_its_names(tmp_path):
    """A module's own package has started before the module runs: importing
    its sibling modules is no circle, importing a name its __init__ defines is."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "__init__.py").write_text("from .b import g\n")
    (tmp_path / "sub" / "b.py").write_text("from . import d\n\ndef g():\n    return d\n")
    (tmp_path / "sub" / "d.py").write_text("import os\n")
    assert circles(import_graph(tmp_path)) == []
    (tmp_path / "sub" / "d.py").write_text("from . import g\n")
    graph = import_graph(tmp_path)
    assert graph["sub/d.py"] == {"sub/__init__.py"}
    assert circles(graph) == [["sub/__init__.py", "sub/b.py", "sub/d.py", "sub/__init__.py"]]
