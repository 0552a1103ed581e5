"""The package's shape: imports go one way along the flow (core -> data -> evaluation -> training ->
experiments -> cli), functions fit on a screen, and the scripts are thin entry points."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pyro_vae"
LAYERS = ["core", "data", "distributed", "evaluation", "training", "experiments", "cli"]  # lower first
SHARED = {"errors", "settings", "files", "threads"}  # helpers every layer may use
ALLOWED_UPWARD = {("evaluation", "training.step")}  # the fits in evaluation train with the one SVI step


def layer(module: str) -> str | None:
    """The layer of a module path relative to the package, such as "core" for core.model."""
    head = module.split(".")[0]
    return head if head in LAYERS else None


def imports(path: Path) -> set[str]:
    """The pyro_vae modules a file imports, relative to the package ("core.model", "training.step", ...)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pyro_vae"):
            base = node.module.removeprefix("pyro_vae").lstrip(".")
            found |= {
                f"{base}.{a.name}".strip(".") if not base or (PACKAGE / base).is_dir() else base for a in node.names
            }
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
            upward = other is not None and LAYERS.index(other) > LAYERS.index(own)
            if upward and not any(own == a and module.startswith(b) for a, b in ALLOWED_UPWARD):
                wrong.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not wrong, wrong


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
    for script in set((ROOT / "scripts").glob("*.py")) - {ROOT / "scripts" / "startup.py"}:  # startup: their helper
        lines = script.read_text().splitlines()
        assert len(lines) <= 10 and any('guarded_main("pyro_vae.cli.' in line for line in lines), script.name
