"""The import direction of grosslib's modules: method <- harness <- presentation, never the other way.

Every module under ``grosslib/`` is parsed with :mod:`ast` (every import, also those inside functions;
relative imports resolved) and must be placed in one layer below. A module may import grosslib modules
of its own layer or of a lower one. Every module also needs a docstring and an ``__all__``.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "grosslib"

#: layer name -> the grosslib modules in it ("" is the package ``grosslib/__init__.py``).
LAYERS: dict[str, tuple[str, ...]] = {
    "method": ("", "psi", "btd", "bottleneck", "series", "sampling", "reconstruction", "models", "resnet",
               "macs", "latency", "search", "evolution"),
    "harness": ("paths", "io", "runinfo", "progress", "data", "checkpoint", "train", "presets", "experiment",
                "records", "study", "study.ray_engine"),
    "presentation": ("tables", "report", "verdicts", "plots", "notebook", "checks", "anycnn", "pipeline",
                     "study.__main__"),
}
RANK = {name: i for i, name in enumerate(LAYERS)}
LAYER_OF = {("grosslib." + m).rstrip("."): layer for layer, modules in LAYERS.items() for m in modules}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


@dataclass(frozen=True)
class Import:
    """One grosslib module a module imports, where, and how it is written."""

    target: str
    line: int
    text: str


def _resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute module of ``from <level dots><name> import ...`` written in ``module``."""
    if level == 0:
        return name or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def grosslib_imports(module: str) -> list[Import]:
    """Every grosslib module ``module`` imports, at any depth of its code."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "grosslib" or alias.name.startswith("grosslib."):
                    found.append(Import(alias.name, node.lineno, f"import {alias.name}"))
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(module, is_package, node.level, node.module)
            if source != "grosslib" and not source.startswith("grosslib."):
                continue
            written = "." * node.level + (node.module or "")
            for alias in node.names:
                # ``from grosslib import train`` imports the module grosslib.train, else a name of the source
                submodule = f"{source}.{alias.name}"
                target = submodule if submodule in MODULES else source
                found.append(Import(target, node.lineno, f"from {written} import {alias.name}"))
    return found


def _tree(module: str) -> ast.Module:
    return ast.parse(MODULES[module].read_text(), filename=str(MODULES[module]))


# --------------------------------------------------------------------------------------------- placement
def test_the_package_is_found() -> None:
    assert {"grosslib", "grosslib.train", "grosslib.study", "grosslib.study.__main__"} <= set(MODULES)


def test_every_module_is_placed_in_a_layer() -> None:
    unplaced = sorted(set(MODULES) - set(LAYER_OF))
    assert not unplaced, f"modules without a layer (add them to LAYERS in {__name__}): {unplaced}"


def test_every_placed_module_exists() -> None:
    stale = sorted(set(LAYER_OF) - set(MODULES))
    assert not stale, f"LAYERS names modules that do not exist: {stale}"
    modules = [m for group in LAYERS.values() for m in group]
    assert len(modules) == len(set(modules)), "a module is placed in two layers"


# --------------------------------------------------------------------------------------------- imports
@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_the_layers(module: str) -> None:
    if module not in LAYER_OF:
        pytest.fail(f"{module} has no layer")
    layer = LAYER_OF[module]
    upward = [f"{module} ({layer}) line {imp.line}: `{imp.text}` imports {imp.target} "
              f"({LAYER_OF[imp.target]})" for imp in grosslib_imports(module)
              if imp.target in LAYER_OF and RANK[LAYER_OF[imp.target]] > RANK[layer]]
    assert not upward, "imports of a higher layer:\n" + "\n".join(upward)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_name_existing_modules(module: str) -> None:
    missing = [f"{module} line {imp.line}: `{imp.text}` ({imp.target} does not exist)"
               for imp in grosslib_imports(module) if imp.target not in MODULES]
    assert not missing, "\n".join(missing)


def test_the_import_parser_sees_every_kind_of_import() -> None:
    """The parser on a known module: relative, absolute and function-level imports all resolved."""
    found = {(imp.target, imp.text) for imp in grosslib_imports("grosslib.train")}
    assert ("grosslib.checkpoint", "from grosslib.checkpoint import Checkpointer") in found
    assert ("grosslib.progress", "from grosslib import progress") in found
    assert _resolve("grosslib.study", True, 2, "train") == "grosslib.train"
    assert _resolve("grosslib.study", True, 1, None) == "grosslib.study"
    assert _resolve("grosslib.study.__main__", False, 1, None) == "grosslib.study"
    assert _resolve("grosslib.records", False, 1, "presets") == "grosslib.presets"
    assert _resolve("grosslib", True, 1, "btd") == "grosslib.btd"
    records = {imp.target for imp in grosslib_imports("grosslib.records")}
    assert "grosslib.experiment" in records          # imported inside make_experiments


# --------------------------------------------------------------------------------------------- documentation
@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_module_has_a_docstring(module: str) -> None:
    docstring = ast.get_docstring(_tree(module))
    assert docstring and docstring.strip(), f"{module} has no module docstring"


def _bound_names(tree: ast.Module) -> set[str]:
    """Every name the module binds anywhere (defs, classes, imports, assignments): a permissive check."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return names


def _declared_all(tree: ast.Module) -> list[str] | None:
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] \
            if isinstance(node, ast.AnnAssign) else []
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            return list(ast.literal_eval(node.value)) if node.value is not None else []
    return None


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_module_defines_all(module: str) -> None:
    tree = _tree(module)
    declared = _declared_all(tree)
    assert declared is not None, f"{module} ({MODULES[module]}) defines no __all__"
    undefined = sorted(set(declared) - _bound_names(tree))
    assert not undefined, f"{module}.__all__ lists names it does not define: {undefined}"
    assert len(declared) == len(set(declared)), f"{module}.__all__ lists a name twice"
