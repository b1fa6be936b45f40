"""Drills of issue 12 against a real `sparseqd serve` (API, Celery worker, embedded broker) over real HTTP: input
that used to take a process down is refused at the API or fails its job cleanly, and the service goes on serving.
Each drill prints its counts."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.helpers.api import trajectories_npz
from tests.helpers.hostile import lying_checkpoint, zip_bomb
from tests.helpers.processes import Server, alive, process_env, sparseqd

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

MEMORY_CEILING = 512 << 20
JOB_RATE = 20  # per minute and key on this server: the rate drill spends a key of its own
SMALL = {
    "task": {"type": "adding", "sequence_length": 8, "steps_per_epoch": 5},
    "model": {"cell": "rnn_relu", "hidden_size": 12},
    "method": {"type": "dense"},
    "training": {"epochs": 1, "batch_size": 8},
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("limits") / "data"
    env = process_env(
        data_dir, SPARSEQ_JOB_MEMORY_LIMIT_BYTES=str(MEMORY_CEILING), SPARSEQ_RATE_LIMIT_JOBS=f"{JOB_RATE}/minute"
    )
    server = Server(data_dir, env=env)
    try:
        yield server.start()
    finally:
        server.close()


def another_key(server: Server, name: str) -> dict[str, str]:
    """A key of its own (sparseqd create-key on the running server's data dir)."""
    done = subprocess.run(
        [*sparseqd(), "create-key", name, "--data-dir", str(server.data_dir)],
        env=process_env(server.data_dir),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return {"Authorization": f"Bearer {done.stdout.strip().splitlines()[-1]}"}


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.key}"}, timeout=60) as client:
        yield client


def worker_is_serving(http) -> dict:
    """A small job runs to the end: the worker took no harm."""
    job = http.post("/v1/jobs", json={"recipe": SMALL, "files": {}}).json()
    deadline = time.monotonic() + 120
    while job["status"] not in ("succeeded", "failed", "cancelled") and time.monotonic() < deadline:
        time.sleep(0.25)
        job = http.get(f"/v1/jobs/{job['id']}").json()
    assert job["status"] == "succeeded", job
    return job


class PeakRSS:
    """The resident memory of a process, sampled every 5 ms while the block runs: (baseline, peak) in bytes."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.baseline = self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


def test_a_zip_bomb_gets_400_and_the_api_grows_by_less_than_100_mib(server, http, tmp_path):
    def post(content: bytes, name: str) -> httpx.Response:
        return http.post("/v1/files", files={"file": (name, content)}, data={"purpose": "trajectories"})

    assert post(trajectories_npz(), "warm.npz").json()["status"] == "processed"  # numpy and the validator loaded
    bomb = tmp_path / "bomb.npz"
    zip_bomb(bomb, 1 << 30)
    content = bomb.read_bytes()
    assert 0.9 * (1 << 20) < len(content) < 1.2 * (1 << 20)  # a 1 MiB file declaring 1 GiB
    with PeakRSS(server.pid) as rss:
        response = post(content, "bomb.npz")
    grown = (rss.peak - rss.baseline) / (1 << 20)
    print(
        f"\nzip bomb drill: 1 upload of {len(content):,} bytes declaring {1 << 30:,}: {response.status_code} "
        f"{response.json()['error']['code']}; API resident memory {rss.baseline / (1 << 20):.0f} MiB, "
        f"peak +{grown:.1f} MiB"
    )
    assert response.status_code == 400, response.text
    assert "is this a zip bomb?" in response.json()["error"]["message"]
    assert grown < 100
    assert alive(server.pid) and http.get("/healthz").status_code == 200


ABSURD = {
    "hidden_size 10^30": ("model", "hidden_size", 10**30, "recipe.model.hidden_size"),
    "batch_size 10^9": ("training", "batch_size", 10**9, "recipe.training.batch_size"),
    "place_cells 10^8": ("task", "place_cells", 10**8, "recipe.task.place_cells"),
    "adding sequence_length 10^7": ("task", "sequence_length", 10**7, "recipe.task.sequence_length"),
    "epochs 10^9": ("training", "epochs", 10**9, "recipe.training.epochs"),
    # within the schema's bounds, over the estimate's: 65,536^2 x 4 LSTM weights
    "hidden_size 65,536 (lstm)": ("model", "hidden_size", 65_536, "recipe.model.hidden_size"),
}


def absurd(section: str, field: str, value: int) -> dict:
    recipe = json.loads(json.dumps(SMALL))
    if field == "place_cells":
        recipe["task"] = {"type": "navigation", "place_cells": value}
    if value == 65_536:
        recipe["model"]["cell"] = "lstm"
    recipe[section][field] = value
    return recipe


def test_the_absurd_recipes_and_the_lying_init_from_are_refused_and_the_worker_serves(server, http):
    refused = {}
    for name, (section, field, value, param) in ABSURD.items():
        response = http.post("/v1/jobs", json={"recipe": absurd(section, field, value), "files": {}})
        assert response.status_code == 422 and response.json()["error"]["param"] == param, (name, response.text)
        refused[name] = response.json()["error"]["code"]
    lying = http.post(
        "/v1/files", files={"file": ("lying.safetensors", lying_checkpoint())}, data={"purpose": "weights"}
    ).json()
    assert len(lying_checkpoint()) < 700 and lying["status"] == "error", lying
    job = http.post("/v1/jobs", json={"recipe": {**SMALL, "init_from": lying["id"]}, "files": {}})
    assert job.status_code == 400 and job.json()["error"]["param"] == "recipe.init_from", job.text
    refused["645-byte init_from claiming 2e9 entries"] = job.json()["error"]["code"]
    worker_is_serving(http)
    print(f"\nabsurd recipe drill: {len(refused)} submitted, {len(refused)} refused at the API ({refused}), 0 queued")


def test_a_job_over_its_memory_ceiling_fails_out_of_memory_and_the_next_job_runs(server, http):
    # 144M parameters (under the 200M limit; 2.3 GB with Adam, under the 32 GiB estimate limit) but a 576 MB matrix:
    # more than the 512 MiB this server's jobs may allocate
    recipe = {**SMALL, "model": {"cell": "rnn_tanh", "hidden_size": 12_000}}
    estimate = http.post("/v1/estimate", json={"recipe": recipe}).json()
    assert estimate["parameters"] > 12_000**2 and estimate["training_memory_bytes"] > 4 * MEMORY_CEILING
    worker = [p for p in server.family() if "celery" in Path(f"/proc/{p}/cmdline").read_text()]
    job = http.post("/v1/jobs", json={"recipe": recipe, "files": {}}).json()
    deadline = time.monotonic() + 120
    while job["status"] not in ("succeeded", "failed", "cancelled") and time.monotonic() < deadline:
        time.sleep(0.25)
        job = http.get(f"/v1/jobs/{job['id']}").json()
    assert job["status"] == "failed" and job["error"]["code"] == "out_of_memory", job
    assert f"{MEMORY_CEILING:,} bytes" in job["error"]["message"]
    after = worker_is_serving(http)
    assert [p for p in server.family() if "celery" in Path(f"/proc/{p}/cmdline").read_text()] == worker  # same one
    print(f"\nmemory drill: 2 jobs, 1 out_of_memory ({job['attempts']} attempt), 1 {after['status']}, worker pid kept")


def test_job_creation_is_rate_limited_per_key(server, http):
    headers = another_key(server, "rate-drill")
    answers = [
        httpx.post(f"{server.url}/v1/jobs", headers=headers, json={"recipe": absurd(*ABSURD["epochs 10^9"][:3])})
        for _ in range(JOB_RATE + 5)
    ]
    codes = [a.status_code for a in answers]
    print(f"\nrate limit drill: {len(codes)} submissions, {codes.count(422)} answered, {codes.count(429)} x 429")
    assert codes == [422] * JOB_RATE + [429] * 5
    assert 1 <= int(answers[-1].headers["Retry-After"]) <= 60
    assert http.get("/v1/jobs").status_code == 200  # another key, and reads: unaffected


def test_a_bounded_schemathesis_run_finds_no_server_error_and_nothing_else(server, tmp_path):
    headers = another_key(server, "schemathesis")
    report = tmp_path / "report.json"
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "--config-file",
        str(Path(__file__).with_name("schemathesis.toml")),
        "run",
        f"{server.url}/openapi.json",
        "-H",
        f"Authorization: {headers['Authorization']}",
        # every check, as the default is: a --checks option here would override the config file's exceptions
        "--max-examples",
        "10",
        "--max-time",
        "45",
        "--workers",
        "2",
        "--seed",
        "12",
        "--generation-database",
        "none",
        "--no-color",
        "--report",
        "json",
        "--report-json-path",
        str(report),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    result = json.loads(report.read_text())
    failures = {f"{f['code']} {f['title']}": f["count"] for f in result["failures"]}
    server_errors = failures.get("ST101 Server error", 0)
    print(
        f"\nschemathesis drill: {result['test_cases']['generated']} cases over {result['operations']['tested']} "
        f"operations, {server_errors} x 5xx; other findings (the OpenAPI document's): {failures or 'none'}"
    )
    assert result["operations"]["tested"] >= 15 and result["test_cases"]["generated"] > 100, done.stdout[-3000:]
    assert server_errors == 0, done.stdout[-6000:]
    assert failures == {}, done.stdout[-6000:]  # no schema violation, no valid request refused, nothing else
