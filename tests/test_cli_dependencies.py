"""Declared dependencies match the code, and ``rskd info`` is quick and quiet."""

from __future__ import annotations

import ast
import re
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from cli_helpers import PACKAGE_ROOT, rskd

tomllib = pytest.importorskip("tomllib")

PACKAGE = PACKAGE_ROOT / "rskd_tutorial"
# import name -> distribution name, where they differ
DISTRIBUTION = {"PIL": "pillow", "yaml": "pyyaml", "py_sod_metrics": "pysodmetrics", "pytorch_wavelets": "pytorch-wavelets",
                "pywt": "pywavelets", "IPython": "ipykernel"}
# declared although the package does not import them itself, and why
INDIRECT = {"setuptools": "pytorch-wavelets 1.3 imports pkg_resources",
            "pywavelets": "pytorch-wavelets' backend; tests check the Haar DWT against pywt"}
OPTIONAL = {"IPython"}   # imported inside try/except ImportError (viz.show_source in a notebook)


def _imports() -> set[str]:
    names = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "rskd_tutorial"}


def _declared() -> tuple[set[str], set[str]]:
    project = tomllib.loads((PACKAGE_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]

    def names(reqs: list[str]) -> set[str]:
        return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in reqs}

    extras = set().union(*(names(v) for v in project["optional-dependencies"].values()))
    return names(project["dependencies"]), extras


def test_every_import_is_declared_and_every_dependency_used():
    core, extras = _declared()
    imported = _imports()
    dist = {DISTRIBUTION.get(m, m).lower(): m for m in imported}
    undeclared = sorted(d for d, m in dist.items() if d not in core and not (m in OPTIONAL and d in extras))
    assert not undeclared, f"imported but not declared in [project.dependencies]: {undeclared}"
    unused = sorted(d for d in core if d not in dist and d not in INDIRECT)
    assert not unused, f"declared but never imported by rskd_tutorial: {unused}"


def test_tb_extra_installs_tensorboard():
    _, extras = _declared()
    project = tomllib.loads((PACKAGE_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert any(r.startswith("tensorboard") for r in project["optional-dependencies"]["tb"]) and "tensorboard" in extras


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def test_rskd_info_is_quiet_and_quick(tmp_path: Path):
    """No pkg_resources warning (pytorch_wavelets is not imported: versions come from package metadata) and
    little work: CPU time, not wall time, since a shared machine may starve the process."""
    before = _children_cpu_seconds()
    proc = rskd("info", cwd=tmp_path)
    cpu = _children_cpu_seconds() - before
    assert proc.returncode == 0 and "pytorch_wavelets" in proc.stdout and "profile:" in proc.stdout
    assert "pkg_resources" not in proc.stderr and "Warning" not in proc.stderr, proc.stderr
    assert cpu < 8, f"rskd info used {cpu:.1f} s of CPU"      # importing pytorch_wavelets, timm ... cost ~5 s more


def test_rskd_info_reads_versions_without_importing_the_libraries(tmp_path: Path):
    from cli_helpers import rskd_env

    code = ("import sys; from rskd_tutorial.cli import main; main(['info']); "
            "print('LOADED', sorted(m for m in ('pytorch_wavelets', 'timm', 'pycocotools', 'py_sod_metrics', "
            "'pkg_resources') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=rskd_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "LOADED []"
