"""The package's shape: imports go one way along the flow (core -> data -> evaluation -> training ->
experiments -> cli) with no circle, modules and functions fit on a screen, every command's flags come from
the declared settings, and the scripts are thin entry points."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pyro_vae"
LAYERS = ["core", "data", "distributed", "evaluation", "training", "experiments", "cli"]  # lower first
SHARED = {"errors", "settings", "files", "threads"}  # helpers every layer may use
MAX_MODULE_LINES = 300
MAX_HAND_WRITTEN_FLAGS = 10  # add_argument calls in pyro_vae/cli: the rest come from the declared settings


def layer(module: str) -> str | None:
    """The layer of a module path relative to the package, such as "core" for core.model."""
    head = module.split(".")[0]
    return head if head in LAYERS else None


def is_module(name: str) -> bool:
    """Whether `name` (relative to the package, dotted) is a module or a package of it."""
    path = PACKAGE.joinpath(*name.strip(".").split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports(path: Path) -> set[str]:
    """The pyro_vae modules a file imports, relative to the package ("core.model", "training.step", ...)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pyro_vae"):
            base = node.module.removeprefix("pyro_vae").lstrip(".")
            found |= {f"{base}.{a.name}".strip(".") if is_module(f"{base}.{a.name}") else base for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("pyro_vae.") for a in node.names if a.name.startswith("pyro_vae.")}
    return found


def test_imports_go_one_way_along_the_flow():
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        own = layer(".".join(path.relative_to(PACKAGE).with_suffix("").parts))
        if own is None:
            continue
        for module in imports(path):
            other = layer(module)
            if other is not None and LAYERS.index(other) > LAYERS.index(own):
                wrong.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not wrong, wrong


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")


def test_no_module_imports_itself_through_others():
    """No circle in the import graph, type-only imports (under TYPE_CHECKING) included."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = {name: {m for m in imports(path) if m in modules and m != name} for name, path in modules.items()}
    state: dict[str, str] = {}

    def circle_from(name: str, trail: list[str]) -> list[str] | None:
        state[name] = "open"
        for other in sorted(graph[name]):
            if state.get(other) == "open":
                return trail[trail.index(other) :] + [other] if other in trail else [name, other]
            if other not in state and (found := circle_from(other, [*trail, other])):
                return found
        state[name] = "done"
        return None

    circle = next((found for name in sorted(graph) if name not in state and (found := circle_from(name, [name]))), None)
    assert circle is None, " -> ".join(circle)


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_module_fits_in_300_lines(path):
    assert len(path.read_text().splitlines()) <= MAX_MODULE_LINES


def test_the_commands_flags_come_from_the_declared_settings():
    calls = [
        node
        for path in (PACKAGE / "cli").glob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add_argument"
    ]
    assert len(calls) <= MAX_HAND_WRITTEN_FLAGS


def test_core_imports_nothing_but_core_and_the_shared_helpers():
    for path in (PACKAGE / "core").glob("*.py"):
        outside = {m for m in imports(path) if layer(m) != "core" and m.split(".")[0] not in SHARED}
        assert not outside, f"{path.name} imports {outside}"


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_function_fits_on_a_screen(path):
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 60
    ]
    assert not long


def test_scripts_are_thin_entry_points():
    for script in (ROOT / "scripts").glob("*.py"):
        lines = script.read_text().splitlines()
        assert len(lines) <= 10 and any('guarded_main("pyro_vae.cli.' in line for line in lines), script.name
