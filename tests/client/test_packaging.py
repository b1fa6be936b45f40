"""Two distributions, one of each thing: ``sparseq`` (client/: the SDK and the ``sparseq`` command, HTTP only) and
``sparseq-server`` (the root: the service and ``sparseqd``). Each builds as a wheel; installed side by side into one
fresh environment, no file of one is a file of the other, and both commands run from there."""

from __future__ import annotations

import email
import json
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.helpers.packaging import CLIENT, SERVER, build_wheel, record, wheel_text

HEAVY = {"torch", "numpy", "compress", "service", "workers", "fastapi", "sqlalchemy", "celery", "yaml"}


def test_importing_the_sdk_loads_nothing_of_ours_and_no_torch():
    probe = "import sys, sparseq, sparseq.cli; print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert {"sparseq", "httpx", "pydantic"} <= set(loaded)
    assert HEAVY.isdisjoint(loaded), HEAVY.intersection(loaded)


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("wheels")
    return {
        "client": build_wheel(CLIENT, directory / "client"),
        "server": build_wheel(SERVER, directory / "server"),
    }


def test_the_sdk_wheel_holds_the_sparseq_package_and_needs_only_httpx_pydantic_and_tqdm(wheels):
    wheel = wheels["client"]
    assert wheel.name.startswith("sparseq-0.1.0-")
    metadata = email.message_from_string(wheel_text(wheel, "METADATA"))
    assert all(name.startswith("sparseq/") for name in record(wheel))
    assert "sparseq/py.typed" in record(wheel)
    requires = [r for r in metadata.get_all("Requires-Dist") if "extra ==" not in r]
    assert sorted(r.split(">")[0] for r in requires) == ["httpx", "pydantic", "tqdm"]
    assert "sparseq = sparseq.cli:main" in wheel_text(wheel, "entry_points.txt")


def test_both_wheels_install_into_one_environment_without_sharing_a_file_and_both_commands_run(wheels, tmp_path):
    client, server = record(wheels["client"]), record(wheels["server"])
    assert client & server == set(), sorted(client & server)
    assert "sparseq" not in wheel_text(wheels["server"], "entry_points.txt").split("sparseqd")[0]  # only sparseqd there
    assert not any(name.startswith("sparseq/") for name in server)

    # A fresh environment that installs both wheels (no dependencies: those of this test's environment are made
    # visible behind it by a .pth file, so the wheels' own files are what the commands run from).
    environment = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(environment)
    python = environment / "bin" / "python"
    fresh = Path(subprocess.run([python, "-c", "import site; print(site.getsitepackages()[0])"], text=True,
                                capture_output=True, check=True).stdout.strip())  # fmt: skip
    (fresh / "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", "--no-index"]
    subprocess.run([*install, str(wheels["client"]), str(wheels["server"])], check=True, timeout=300)

    installed = {}  # what pip recorded in the fresh environment, per distribution
    for dist_info in fresh.glob("*.dist-info"):
        files = {line.split(",")[0] for line in (dist_info / "RECORD").read_text().splitlines() if line}
        installed[dist_info.name.split("-")[0]] = {f for f in files if ".dist-info/" not in f}
    assert set(installed) >= {"sparseq", "sparseq_server"}
    assert installed["sparseq"] & installed["sparseq_server"] == set()

    where = "import sparseq, service; print(sparseq.__file__); print(service.__file__)"
    modules = subprocess.run([python, "-c", where], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert all(line.startswith(str(fresh)) for line in modules.stdout.split()), modules.stdout
    for command, words in (("sparseq", "sweeps"), ("sparseqd", "serve")):
        result = subprocess.run([environment / "bin" / command, "--help"], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and words in result.stdout, result.stdout + result.stderr
    version = subprocess.run([python, "-c", "import sparseq._base as b; print(b.version())"], capture_output=True,
                             text=True, check=True, cwd=tmp_path)  # fmt: skip
    assert json.dumps(version.stdout.strip()) == '"0.1.0"'
