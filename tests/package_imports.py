"""Which of the handbone package's modules a piece of code imports, read
with the ast module: the one reading of the package's imports that
tests/test_imports.py (no import circle) and tests/test_dvc_stage.py (every
DVC stage depends on the modules its command runs) share.

Every import counts, at module level and inside functions; relative
(``from . import x``, ``from .x import y``, ``from .. import z``) and
absolute (``import handbone.x``, ``from handbone.x import y``) forms; in
subpackages and their ``__init__`` too. A module is named by its file
relative to the package's folder: "model.py", "sub/__init__.py"."""

import ast
import posixpath
from pathlib import Path

import pytest

NAME = "handbone"
PACKAGE = Path(__file__).resolve().parents[1] / "workflow" / NAME


def module_file(name: str, root: Path = PACKAGE) -> str | None:
    """The file of module ``handbone.<name>`` (dotted; "" for the package
    itself) relative to ``root``, the package's folder, or None."""
    folder = name.replace(".", "/")
    for candidate in (f"{folder}.py", f"{folder}/__init__.py") if folder else ("__init__.py",):
        if (root / candidate).is_file():
            return candidate
    return None


def handbone_imports(tree: ast.AST, importer: str | None = None, root: Path = PACKAGE) -> set[str]:
    """The files of the package's modules that ``tree`` imports anywhere.

    ``importer`` is the file of the module ``tree`` comes from (its relative
    imports start from that file's package), None for code outside the
    package (the workflow's files), which may import only absolutely.
    Importing a module runs its packages' ``__init__`` first: those count,
    but for the packages ``importer`` lies in, which have started before it
    runs. Importing from a package a name that is no module of it (``from .
    import function``) needs its ``__init__`` to have run: that counts
    always. An import of no module of the package fails."""
    if importer is None:
        package, ancestors = None, set()
    else:
        package = posixpath.dirname(importer).replace("/", ".")
        parts = package.split(".") if package else []
        ancestors = {".".join(parts[:length]) for length in range(len(parts) + 1)}
    named = set()  # the modules the import statements name, dotted
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                if package is None:
                    pytest.fail(f"a relative import outside the {NAME} package: {ast.unparse(node)}")
                parts = package.split(".") if package else []
                if node.level - 1 > len(parts):
                    pytest.fail(f"{importer}: an import from outside the {NAME} package: {ast.unparse(node)}")
                base = parts[: len(parts) - node.level + 1] + (node.module.split(".") if node.module else [])
            elif node.module and node.module.split(".")[0] == NAME:
                base = node.module.split(".")[1:]
            else:
                continue
            # from . import x, from .x import y: x, y may be modules themselves
            modules = {".".join([*base, alias.name]) for alias in node.names}
            modules = {module for module in modules if module_file(module, root)}
            named |= modules
            if len(modules) < len(node.names):
                named.add(".".join(base))
        elif isinstance(node, ast.Import):
            named |= {alias.name.partition(".")[2] for alias in node.names if alias.name.split(".")[0] == NAME}
    found = set()
    for name in named:
        if module_file(name, root) is None:
            dotted = ".".join([NAME, name] if name else [NAME])
            pytest.fail(f"{importer or 'the workflow'}: {dotted} is not a module in {root}")
        parts = name.split(".") if name else []
        packages = {".".join(parts[:length]) for length in range(len(parts))} - ancestors
        for package_name in packages:
            if module_file(package_name, root) is None:
                pytest.fail(f"{NAME}.{package_name} has no __init__.py in {root}")
        found |= {module_file(module, root) for module in packages | {name}}
    return found


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """{module: the package's modules it imports}, for every module of the
    package and of its subpackages (files relative to ``root``)."""
    graph = {}
    for path in sorted(root.rglob("*.py")):
        module = path.relative_to(root).as_posix()
        graph[module] = handbone_imports(ast.parse(path.read_text(), str(path)), module, root) - {module}
    return graph
