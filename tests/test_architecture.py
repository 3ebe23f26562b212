"""The package's layering, read from its source: imports go one way (data and spectral are leaves;
models and distill never reach into the training loop or the recipes), no module borrows another's
private names, and no recipe module grows past a readable size."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "rskd_tutorial"
MODULES = sorted(PACKAGE.rglob("*.py"))
# part -> parts it must never import (function-level imports included)
FORBIDDEN = {
    "data": {"spectral", "models", "distill", "engine", "recipes", "cli", "bench", "profile", "devices", "config", "viz"},
    "spectral": {"data", "models", "distill", "engine", "recipes", "cli", "bench", "profile", "devices", "config", "viz"},
    "models": {"distill", "engine", "recipes", "cli", "bench"},
    "distill": {"engine", "recipes", "cli", "bench"},
    "engine": {"recipes", "cli", "bench"},
}
MAX_RECIPE_LINES = 400


def _part(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py")


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(module, imported names, line) of every import of the package's own modules in ``path``."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("rskd_tutorial"):
            out.append((node.module, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names if a.name.startswith("rskd_tutorial")]
    return out


def test_the_parser_sees_the_package():
    assert len(MODULES) > 40
    assert any(_imports(p) for p in MODULES)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_go_one_way(path: Path):
    part = _part(path)
    banned = FORBIDDEN.get(part, set())
    for module, _, line in _imports(path):
        target = module.split(".")[1] if "." in module else ""
        assert target not in banned, f"{path.relative_to(PACKAGE)}:{line} ({part}) imports {module}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_another_modules_private_names(path: Path):
    for module, names, line in _imports(path):
        private = [n for n in names if n.startswith("_") and not n.startswith("__")]
        assert not private, f"{path.relative_to(PACKAGE)}:{line} imports private {private} from {module}"


def test_recipe_modules_stay_readable():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.joinpath("recipes").rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_RECIPE_LINES}
    assert not long, f"recipe modules over {MAX_RECIPE_LINES} lines: {long}"


def test_the_rule_catches_a_violation(tmp_path: Path):
    bad = tmp_path / "rskd_tutorial" / "distill" / "bad.py"
    bad.parent.mkdir(parents=True)
    bad.write_text("def f():\n    from rskd_tutorial.recipes.scrkd import cascade\n    return cascade\n")
    (module, names, line), = _imports(bad)
    assert module.split(".")[1] in FORBIDDEN["distill"] and names == ["cascade"] and line == 2
