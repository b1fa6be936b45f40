"""Wheels of the two distributions, built from copies of their sources (setuptools writes build/ and .egg-info
beside what it builds, which must not land in the checkout)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.helpers.processes import ROOT

SERVER = (ROOT, ("pyproject.toml", "README.md", "compress", "service", "workers", "migrations"))
CLIENT = (ROOT / "client", ("pyproject.toml", "sparseq"))
_SKIP = shutil.ignore_patterns("__pycache__", "build", "*.egg-info")


def build_wheel(distribution: tuple[Path, tuple[str, ...]], into: Path) -> Path:
    """The wheel of ``SERVER`` or ``CLIENT`` in ``into`` (no dependencies resolved, no build isolation)."""
    source, parts = distribution
    copy = into / "source"
    copy.mkdir(parents=True)
    for part in parts:
        if (source / part).is_dir():
            shutil.copytree(source / part, copy / part, ignore=_SKIP)
        else:
            shutil.copy(source / part, copy / part)
    command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
    subprocess.run([*command, "--wheel-dir", str(into), str(copy)], check=True, timeout=300, cwd=into)
    (wheel,) = into.glob("*.whl")
    return wheel


def record(wheel: Path) -> set[str]:
    """The files a wheel installs (its RECORD), without its own .dist-info."""
    with zipfile.ZipFile(wheel) as archive:
        text = archive.read(next(n for n in archive.namelist() if n.endswith(".dist-info/RECORD"))).decode()
    return {line.split(",")[0] for line in text.splitlines() if line and ".dist-info/" not in line.split(",")[0]}


def wheel_text(wheel: Path, suffix: str) -> str:
    """A file of the wheel's .dist-info (``METADATA``, ``entry_points.txt``) as text."""
    with zipfile.ZipFile(wheel) as archive:
        return archive.read(next(n for n in archive.namelist() if n.endswith(f".dist-info/{suffix}"))).decode()
