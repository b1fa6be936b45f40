"""The client stands alone: it imports nothing of ours and no torch, and it builds as a wheel that needs only httpx
(ARCHITECTURE.md: 'talks HTTP only; installable without torch')."""

from __future__ import annotations

import email
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

CLIENT = Path(__file__).resolve().parents[2] / "client"
HEAVY = {"torch", "numpy", "compress", "service", "workers", "fastapi", "sqlalchemy", "celery", "yaml"}


def test_importing_the_client_loads_nothing_of_ours_and_no_torch():
    probe = "import sys, client, client.cli; print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert "client" in loaded and "httpx" in loaded
    assert HEAVY.isdisjoint(loaded), HEAVY.intersection(loaded)


def test_the_client_builds_a_wheel_that_needs_only_httpx_and_tqdm(tmp_path):
    source = shutil.copytree(CLIENT, tmp_path / "client", ignore=shutil.ignore_patterns("__pycache__", "build"))
    command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
    subprocess.run([*command, "--wheel-dir", str(tmp_path / "dist"), str(source)], check=True, timeout=120)
    (wheel,) = (tmp_path / "dist").glob("sparseq_client-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = email.message_from_bytes(archive.read(next(n for n in names if n.endswith("/METADATA"))))
        entry_points = archive.read(next(n for n in names if n.endswith("/entry_points.txt"))).decode()
    modules = sorted(n for n in names if not n.split("/")[0].endswith(".dist-info"))
    assert modules == ["client/__init__.py", "client/cli.py", "client/sdk.py"]
    requires = metadata.get_all("Requires-Dist")
    assert [r for r in requires if "extra ==" not in r] == ["httpx>=0.27", "tqdm>=4.66"]
    assert "sparseq = client.cli:main" in entry_points
