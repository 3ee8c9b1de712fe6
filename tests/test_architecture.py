"""The package's shape, checked like a linter: the import graph (from the source, with ast) has no
circle and no lower layer importing a higher one, an engine never imports another, the light
modules import no torch, and the architecture page (docs/architecture.md) names the tree as it is."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "seesr"
LAYERS: tuple[tuple[str, ...], ...] = (
    ("seesr.errors",),
    ("seesr.io", "seesr.runtime", "seesr.progress"),
    ("seesr.settings",),
    ("seesr.imaging", "seesr.weights"),
    ("seesr.engines",),
    ("seesr.api", "seesr.training"),
    ("seesr.evaluate",),
    ("seesr.ui",),
    ("seesr.cli", "seesr", "predict"),
)
"""Lowest first. A module may import its own group and the groups of lower layers, nothing else."""
ENGINES = ("seesr.engines.seesr", "seesr.engines.realesrgan")
"""An engine is a unit: it may use what is below it and the shape they share, never another engine."""
SHARED_BY_ENGINES = ("seesr.engines.base", "seesr.engines.ladder")
LIGHT = ("seesr.errors", "seesr.progress", "seesr.settings", "seesr.cli", "seesr.io.files", "seesr.io.inputs",
         "seesr.io.naming", "seesr.io.batch", "seesr.weights")  # fmt: skip
"""What the command line reads before it knows it needs torch (``seesr --help``, the settings)."""
HEAVY = ("torch", "diffusers", "transformers", "accelerate")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


SOURCES = {module_name(p): p for p in [*sorted(PACKAGE.rglob("*.py")), REPO_ROOT / "predict.py"]}


def _type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports(name: str, *, top_level_only: bool = False, with_type_checking: bool = True) -> set[str]:
    """The modules ``name`` imports (a ``from package import module`` counts as the module)."""
    found: set[str] = set()

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if _type_checking(child) and not with_type_checking:
                continue
            nested = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if nested and top_level_only:
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                submodules = {f"{child.module}.{alias.name}" for alias in child.names} & set(SOURCES)
                names = [alias for alias in child.names if f"{child.module}.{alias.name}" not in submodules]
                found.update(submodules)
                if names:
                    found.add(child.module)
            visit(child, top and not nested)

    visit(ast.parse(SOURCES[name].read_text()), True)
    return found


def group_of(name: str) -> tuple[int, str]:
    """(layer, group) of a module: the longest group name it is, or is inside."""
    matches = [(layer, group) for layer, groups in enumerate(LAYERS) for group in groups
               if name == group or name.startswith(group + ".")]  # fmt: skip
    assert matches, f"{name} is in no layer of LAYERS"
    return max(matches, key=lambda match: len(match[1]))


def package_imports(name: str, **options: bool) -> set[str]:
    """The modules of this package (and predict) that ``name`` imports."""
    return {target for target in imports(name, **options) if target in SOURCES}


def test_every_module_is_in_a_layer():
    for name in SOURCES:
        group_of(name)


def test_no_lower_layer_imports_a_higher_one():
    wrong = []
    for name in SOURCES:
        layer, group = group_of(name)
        for target in package_imports(name):
            if name.startswith(target + "."):  # its own package: imported before it anyway
                continue
            target_layer, target_group = group_of(target)
            if target_layer > layer or (target_layer == layer and target_group != group):
                wrong.append(f"{name} ({group}) imports {target} ({target_group})")
    assert not wrong, "\n".join(wrong)


def test_engines_are_units():
    for name in SOURCES:
        mine = [engine for engine in ENGINES if name == engine or name.startswith(engine + ".")]
        for target in package_imports(name):
            others = [e for e in ENGINES if (target == e or target.startswith(e + ".")) and e not in mine]
            assert not (others and (mine or name.startswith(SHARED_BY_ENGINES))), f"{name} imports {target}"


def test_no_import_circle():
    """Imports that run (module level or in a function; not those only for type checkers)."""
    graph = {name: package_imports(name, with_type_checking=False) - {name} for name in SOURCES}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def connect(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for name in graph:
        if name not in index:
            connect(name)
    # a package's __init__ importing its own submodules is no circle of modules importing each other
    circles = [c for c in circles if not all(m == c[0] or m.startswith(c[0] + ".") for m in c)]
    assert not circles, circles


@pytest.mark.parametrize("light", LIGHT)
def test_light_modules_import_no_torch(light):
    """What these modules import when they are imported (their module-level imports, followed
    through the package), never torch, diffusers, transformers or accelerate."""
    seen: set[str] = set()
    todo = [name for name in SOURCES if name == light or name.startswith(light + ".")]
    heavy = []
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        found = imports(name, top_level_only=True, with_type_checking=False)
        heavy += [f"{name} imports {target}" for target in found if target.split(".")[0] in HEAVY]
        todo += [target for target in found if target in SOURCES]
        todo += [parent for parent in _parents(name) if parent in SOURCES]
    assert not heavy, heavy


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


# ----------------------------------------------------------------------------- the architecture page
ARCHITECTURE_PAGE = REPO_ROOT / "docs" / "architecture.md"


def architecture_tree() -> list[str]:
    """The paths of the tree on the architecture page (its code block that starts with ``seesr/``;
    two spaces of indent per folder level)."""
    text = ARCHITECTURE_PAGE.read_text()
    blocks = re.findall(r"^```\n(.*?)^```", text, re.S | re.M)
    tree = next((block for block in blocks if block.startswith("seesr/\n")), None)
    assert tree, "docs/architecture.md has no tree starting with seesr/"
    paths, folders = [], []
    for line in tree.splitlines():
        indent = len(line) - len(line.lstrip(" "))
        name = line.split()[0]
        folders = folders[: indent // 2]
        paths.append("".join(folders) + name)
        if name.endswith("/"):
            folders.append(name)
    return paths


def test_the_readme_tree_names_what_exists():
    missing = [path for path in architecture_tree() if not (REPO_ROOT / path).exists()]
    assert not missing, f"the architecture page's tree names what does not exist: {missing}"


def test_the_readme_tree_names_every_package_folder_and_module():
    named = set(architecture_tree())
    folders = {f"{p.parent.relative_to(REPO_ROOT)}/" for p in PACKAGE.rglob("__init__.py")}
    modules = {str(p.relative_to(REPO_ROOT)) for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"}
    assert not folders - named, f"package folders the architecture page's tree leaves out: {sorted(folders - named)}"
    assert not modules - named, f"modules the architecture page's tree leaves out: {sorted(modules - named)}"


def test_every_engine_the_settings_name_is_built_and_has_the_shape():
    from seesr.api import ENGINES as BUILT
    from seesr.engines.base import Engine
    from seesr.settings.models import ENGINES as NAMED

    assert tuple(BUILT) == NAMED
    shape = [name for name in vars(Engine) if not name.startswith("_")]
    for name, engine in BUILT.items():
        assert engine.name == name and (engine.fallback is None or engine.fallback in BUILT)
        assert all(hasattr(engine, member) for member in shape), name
