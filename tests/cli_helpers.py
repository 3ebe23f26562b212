"""Running the real ``rskd`` console script in a subprocess, as a user does (shared by tests/test_cli_*.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import rskd_tutorial

CONFIGS = Path(rskd_tutorial.__file__).resolve().parent / "configs"
PACKAGE_ROOT = Path(rskd_tutorial.__file__).resolve().parent.parent


def rskd_command() -> list[str]:
    """The installed ``rskd`` script beside this interpreter (``python -m rskd_tutorial.cli`` without one)."""
    script = Path(sys.executable).with_name("rskd")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "rskd_tutorial.cli"]


def rskd_env() -> dict[str, str]:
    """The environment of a child ``rskd``: this checkout first on the path (an editable install elsewhere
    must not shadow it), one thread pool per process, no colours."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(PACKAGE_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("RSKD_PROFILE", "ci")
    return env


def rskd(*args: str | os.PathLike, cwd: str | os.PathLike, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``rskd ARGS`` in ``cwd``; returns the finished process (text stdout / stderr)."""
    return subprocess.run([*rskd_command(), *map(str, args)], cwd=cwd, env=rskd_env(), capture_output=True,
                          text=True, timeout=timeout)


def rskd_popen(*args: str | os.PathLike, cwd: str | os.PathLike) -> subprocess.Popen:
    """Start ``rskd ARGS`` in ``cwd`` without waiting (output discarded)."""
    return subprocess.Popen([*rskd_command(), *map(str, args)], cwd=cwd, env=rskd_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def error_line(proc: subprocess.CompletedProcess) -> str:
    """The one error line of a failed command: stderr's last line (progress bars may precede it); fails
    the test if stderr holds a traceback."""
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.replace("\r", "\n").splitlines() if ln.strip()]
    assert lines, f"no error message (rc {proc.returncode}); stdout: {proc.stdout[-500:]}"
    assert lines[-1].startswith("rskd"), lines[-1]
    return lines[-1]


def config(method: str, name: str) -> Path:
    """A smoke config: ``rskd_tutorial/configs/<method>/synthetic/<name>.yaml``."""
    path = CONFIGS / method / "synthetic" / f"{name}.yaml"
    assert path.is_file(), path
    return path
