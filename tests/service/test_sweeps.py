"""Sweeps over the API with a real broker (no worker): validation before any job, max_parallel, release, summary,
cancel, ownership. The summary is checked against figures computed here with ``statistics``."""

from __future__ import annotations

import statistics

import pytest
from sqlalchemy import func, select

from service import sweeps as sweep_service
from service.db import session_scope
from service.tables import Job, utcnow
from tests.helpers.api import broker_messages, lm_recipe

GRID = {"model.hidden_size": [16, 24], "training.lr": [0.5, 1.0], "training.seed": [1, 2]}


def create(client, headers, train_id, **changes):
    body = {"recipe": lm_recipe(), "grid": GRID, "files": {"train": train_id}, "max_parallel": 2, **changes}
    return client.post("/v1/sweeps", headers=headers, json=body)


def jobs_count(sessions) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(Job))


def finish_live_children(sessions, sweep_id, metric_of) -> None:
    with session_scope(sessions) as session:
        for job in session.scalars(select(Job).where(Job.sweep_id == sweep_id, Job.status == "queued")):
            job.status, job.finished_at = "succeeded", utcnow()
            job.metrics = metric_of(job)
        sweep_service.release(session, sweep_id)


def test_a_grid_runs_max_parallel_at_a_time_and_summarises_over_seeds(client, alice, broker, sessions, train_file):
    response = create(client, alice, train_file["id"])
    assert response.status_code == 201, response.text
    sweep = response.json()
    assert sweep["combinations"] == 8 and sweep["status"] == "running"
    assert sweep["progress"] == {"held": 6, "queued": 2}
    assert sorted(m["args"][0] for m in broker_messages(broker)) == sorted(sweep["jobs"])

    def metric_of(job):
        r = job.recipe
        value = r["model"]["hidden_size"] * 10 + r["training"]["lr"] * 3 + r["training"]["seed"] ** 2
        return {
            "name": "valid_perplexity",
            "value": value,
            "reference": 100.0,
            "sparsity": 0.5,
            "checkpoint_bytes": 1000 + r["model"]["hidden_size"],
        }

    for _ in range(4):
        with sessions() as session:
            live = session.scalar(select(func.count()).where(Job.sweep_id == sweep["id"], Job.status == "queued"))
        assert live <= 2
        finish_live_children(sessions, sweep["id"], metric_of)
    done = client.get(f"/v1/sweeps/{sweep['id']}", headers=alice).json()
    assert done["status"] == "succeeded" and done["progress"] == {"held": 0, "succeeded": 8}
    cells = {(c["overrides"]["model.hidden_size"], c["overrides"]["training.lr"]): c for c in done["summary"]["cells"]}
    assert len(cells) == 4
    for (hidden, lr), cell in cells.items():
        values = [hidden * 10 + lr * 3 + seed**2 for seed in (1, 2)]
        assert cell["n"] == 2
        assert abs(cell["value_mean"] - statistics.mean(values)) < 1e-9
        assert abs(cell["value_std"] - statistics.stdev(values)) < 1e-9
        assert cell["checkpoint_bytes_mean"] == 1000 + hidden


def test_a_bad_combination_refuses_the_sweep_and_queues_nothing(client, alice, broker, sessions, train_file):
    before = jobs_count(sessions)
    response = create(client, alice, train_file["id"], grid={"model.hidden_size": [16, 0]})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["param"].startswith("combinations[1].recipe.model.hidden_size")
    assert 'combination 1 {"model.hidden_size": 0}' in error["message"]
    assert jobs_count(sessions) == before and broker_messages(broker) == []


def test_the_sweep_size_is_bounded(make_app):
    from fastapi.testclient import TestClient

    from tests.helpers.api import new_key

    app = make_app(max_sweep_jobs=4)
    with TestClient(app) as other:
        headers = {"Authorization": f"Bearer {new_key(app, 'carol')}"}
        response = create(other, headers, "file_none")  # 8 combinations: refused before any file is looked at
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "limit_exceeded"
    assert "8 combinations" in response.json()["error"]["message"]


def test_cancel_holds_back_the_rest_and_others_see_404(client, alice, bob, sessions, train_file):
    sweep = create(client, alice, train_file["id"]).json()
    assert client.get(f"/v1/sweeps/{sweep['id']}", headers=bob).status_code == 404
    assert client.post(f"/v1/sweeps/{sweep['id']}/cancel", headers=bob).status_code == 404
    assert client.get("/v1/sweeps", headers=bob).json()["data"] == []
    cancelled = client.post(f"/v1/sweeps/{sweep['id']}/cancel", headers=alice).json()
    assert cancelled["status"] == "cancelled"
    assert cancelled["progress"] == {"held": 0, "cancelled": 2}
    with session_scope(sessions) as session:
        assert sweep_service.release(session, sweep["id"]) == []
    assert jobs_count(sessions) == 2


def test_same_idempotency_key_same_sweep(client, alice, train_file):
    body = {"recipe": lm_recipe(), "grid": {"training.seed": [1, 2]}, "files": {"train": train_file["id"]}}
    headers = {**alice, "Idempotency-Key": "k1"}
    first = client.post("/v1/sweeps", headers=headers, json=body)
    again = client.post("/v1/sweeps", headers=headers, json=body)
    assert (first.status_code, again.status_code) == (201, 200) and first.json()["id"] == again.json()["id"]
    other = client.post("/v1/sweeps", headers=headers, json={**body, "max_parallel": 1})
    assert other.status_code == 409


def test_a_lost_release_is_done_by_the_reconciler(client, alice, sessions, train_file):
    from workers.reaper import release_sweeps

    sweep = create(client, alice, train_file["id"]).json()
    with session_scope(sessions) as session:  # two children end and nobody releases (their worker died)
        for job in session.scalars(select(Job).where(Job.sweep_id == sweep["id"])):
            job.status, job.finished_at = "failed", utcnow()
    published = []
    release_sweeps(sessions, published.append)
    after = client.get(f"/v1/sweeps/{sweep['id']}", headers=alice).json()
    assert len(published) == 2 and set(published) <= set(after["jobs"])
    assert after["progress"] == {"held": 4, "failed": 2, "queued": 2}


# -- a finished sweep's own artifacts: summary.json, summary.csv, pareto.png --------------------------------------


def seeded_metric(job) -> dict:
    """Known figures per child: the value depends on the cell and the seed; the speed-up is measured on lr 0.5 only."""
    r = job.recipe
    hidden, lr, seed = r["model"]["hidden_size"], r["training"]["lr"], r["training"]["seed"]
    metrics = {
        "name": "valid_perplexity",
        "lower_is_better": True,
        "value": 400 - hidden * 5 + lr * 30 + seed**2,
        "reference": 100.0 + seed,
        "sparsity": 0.5,
        "checkpoint_bytes": 1000 * hidden,
    }
    if lr == 0.5:
        metrics["speedup_latency"] = 40 / hidden + seed / 10
    return metrics


def finished_sweep(client, headers, sessions, train_id) -> dict:
    sweep = create(client, headers, train_id, max_parallel=8).json()  # all 8 children queued at once
    with session_scope(sessions) as session:  # they end, and nobody releases the sweep yet
        for job in session.scalars(select(Job).where(Job.sweep_id == sweep["id"])):
            job.status, job.finished_at = "succeeded", utcnow()
            job.metrics = seeded_metric(job)
    return sweep


def artifacts_of(client, headers, sweep_id) -> dict[str, dict]:
    response = client.get(f"/v1/sweeps/{sweep_id}/artifacts", headers=headers)
    assert response.status_code == 200, response.text
    listing = response.json()
    assert listing["object"] == "list" and listing["has_more"] is False
    return {a["filename"]: a for a in listing["data"]}


def content(client, headers, artifact) -> bytes:
    response = client.get(f"/v1/artifacts/{artifact['id']}/content", headers=headers)
    assert response.status_code == 200, response.text
    return response.content


@pytest.mark.databases
def test_the_reconciler_finishes_a_sweep_with_its_three_artifacts(client, alice, bob, sessions, store, train_file):
    import csv
    import io
    import json

    from PIL import Image

    from workers.reaper import release_sweeps

    sweep = finished_sweep(client, alice, sessions, train_file["id"])
    assert artifacts_of(client, alice, sweep["id"]) == {}  # running: none yet
    assert release_sweeps(sessions, [].append, store) == [sweep["id"]]  # it finishes it and makes them
    done = client.get(f"/v1/sweeps/{sweep['id']}", headers=alice).json()
    assert done["status"] == "succeeded"
    artifacts = artifacts_of(client, alice, sweep["id"])
    assert set(artifacts) == {"summary.json", "summary.csv", "pareto.png"}
    for artifact in artifacts.values():
        assert artifact["sweep_id"] == sweep["id"] and artifact["job_id"] is None
    assert {artifacts[name]["kind"] for name in ("summary.json", "summary.csv")} == {"report"}
    assert artifacts["pareto.png"]["kind"] == "plot"

    assert json.loads(content(client, alice, artifacts["summary.json"])) == done["summary"]

    rows = list(csv.DictReader(io.StringIO(content(client, alice, artifacts["summary.csv"]).decode())))
    assert len(rows) == 4
    assert list(rows[0])[:2] == ["model.hidden_size", "training.lr"] and "training.seed" not in rows[0]
    for row in rows:
        hidden, lr = int(row["model.hidden_size"]), float(row["training.lr"])
        values = [400 - hidden * 5 + lr * 30 + seed**2 for seed in (1, 2)]
        assert row["metric"] == "valid_perplexity" and row["n"] == "2"
        assert abs(float(row["mean"]) - statistics.mean(values)) < 1e-9
        assert abs(float(row["std"]) - statistics.stdev(values)) < 1e-9
        assert float(row["reference"]) == statistics.mean([101.0, 102.0])
        assert float(row["checkpoint_bytes"]) == 1000 * hidden and float(row["sparsity"]) == 0.5
        if lr == 0.5:
            assert abs(float(row["speedup_latency"]) - statistics.mean([40 / hidden + 0.1, 40 / hidden + 0.2])) < 1e-9
        else:
            assert row["speedup_latency"] == ""

    png = content(client, alice, artifacts["pareto.png"])
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.size[0] >= 1000 and image.size[1] >= 500

    for artifact in artifacts.values():  # another owner sees none of it
        assert client.get(f"/v1/artifacts/{artifact['id']}/content", headers=bob).status_code == 404
        assert client.get(f"/v1/artifacts/{artifact['id']}", headers=bob).status_code == 404
    assert client.get(f"/v1/sweeps/{sweep['id']}/artifacts", headers=bob).status_code == 404
    assert client.get("/v1/sweeps/sweep_none/artifacts", headers=alice).status_code == 404


@pytest.mark.databases
def test_artifacts_are_made_once(client, alice, sessions, store, train_file):
    from service import sweep_report
    from service.tables import Artifact
    from workers.reaper import release_sweeps

    sweep = finished_sweep(client, alice, sessions, train_file["id"])
    with session_scope(sessions) as session:
        sweep_service.release(session, sweep["id"])
    made = sweep_report.publish_in(sessions, store, sweep["id"])
    assert sorted(made) == ["pareto.png", "summary.csv", "summary.json"]
    first = artifacts_of(client, alice, sweep["id"])
    assert sweep_report.publish_in(sessions, store, sweep["id"]) == []
    assert release_sweeps(sessions, [].append, store) == []
    client.post(f"/v1/sweeps/{sweep['id']}/cancel", headers=alice)  # a finished sweep: changes nothing
    assert artifacts_of(client, alice, sweep["id"]) == first
    with sessions() as session:
        assert session.scalar(select(func.count()).where(Artifact.sweep_id == sweep["id"])) == 3


def test_a_render_failure_leaves_the_sweep_and_the_other_files(client, alice, sessions, store, train_file, monkeypatch):
    from service import sweep_report

    def broken(sweep, summary):
        raise RuntimeError("no fonts")

    sweep = finished_sweep(client, alice, sessions, train_file["id"])
    monkeypatch.setitem(sweep_report.RENDERERS, "pareto.png", broken)
    with session_scope(sessions) as session:
        sweep_service.release(session, sweep["id"])
    assert sorted(sweep_report.publish_in(sessions, store, sweep["id"])) == ["summary.csv", "summary.json"]
    assert client.get(f"/v1/sweeps/{sweep['id']}", headers=alice).json()["status"] == "succeeded"
    monkeypatch.undo()
    assert sweep_report.publish_in(sessions, store, sweep["id"]) == ["pareto.png"]  # the missing one only
    assert set(artifacts_of(client, alice, sweep["id"])) == {"summary.json", "summary.csv", "pareto.png"}


def test_a_store_failure_never_fails_the_cancel(client, alice, store, train_file, monkeypatch):
    sweep = create(client, alice, train_file["id"]).json()

    def full(*args, **kwargs):
        raise OSError("no space left on device")

    monkeypatch.setattr(store, "stage_chunks", full)
    cancelled = client.post(f"/v1/sweeps/{sweep['id']}/cancel", headers=alice)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert artifacts_of(client, alice, sweep["id"]) == {}


def test_a_cancelled_sweep_has_its_artifacts_at_once(client, alice, store, train_file):
    import csv
    import io

    sweep = create(client, alice, train_file["id"]).json()
    cancelled = client.post(f"/v1/sweeps/{sweep['id']}/cancel", headers=alice).json()
    artifacts = artifacts_of(client, alice, sweep["id"])
    assert set(artifacts) == {"summary.json", "summary.csv", "pareto.png"}
    rows = list(csv.DictReader(io.StringIO(content(client, alice, artifacts["summary.csv"]).decode())))
    assert len(rows) == len(cancelled["summary"]["cells"]) == 4
    assert {(r["n"], r["mean"], r["std"]) for r in rows} == {("0", "", "")}  # nothing succeeded
    assert content(client, alice, artifacts["pareto.png"]).startswith(b"\x89PNG")


def test_the_worker_makes_them_when_the_last_child_ends(client, alice, sessions, store, train_file):
    from workers.execute import _release_sweep

    sweep = finished_sweep(client, alice, sessions, train_file["id"])
    _release_sweep(sessions, store, sweep["jobs"][-1])
    assert client.get(f"/v1/sweeps/{sweep['id']}", headers=alice).json()["status"] == "succeeded"
    assert set(artifacts_of(client, alice, sweep["id"])) == {"summary.json", "summary.csv", "pareto.png"}


def test_the_pareto_labels_name_a_section_by_its_type_and_stay_short():
    from service.sweep_report import LABEL_CHARS, cell_labels

    cells = [
        {"overrides": {"method": {"type": "moduli_pruning", "target_sparsity": 0.9}}},
        {"overrides": {"method": {"type": "magnitude_pruning", "target_sparsity": 0.9, "allocation": "erk"}}},
        {"overrides": {}},
    ]
    labels = cell_labels(cells)
    assert labels[0] == "method=moduli_pruning(target_sparsity=0.9)"
    assert len(labels[1]) == LABEL_CHARS and labels[1].endswith("…") and labels[1].startswith("method=magnitude")
    assert labels[2] == "base recipe"


@pytest.mark.databases()
def test_concurrent_releases_never_exceed_max_parallel(client, alice, sessions, train_file):
    """A worker whose child ended and the reconciler release the same sweep at the same moment: only the free slots
    are filled (on SQLite, which ignores FOR UPDATE, both once counted the same live children and each added one)."""
    import threading

    sweep = create(client, alice, train_file["id"]).json()
    with session_scope(sessions) as session:  # one of the two live children ends; nobody has released yet
        job = session.get(Job, sweep["jobs"][0])
        job.status, job.finished_at = "succeeded", utcnow()
    barrier, errors = threading.Barrier(6), []

    def release() -> None:
        try:
            barrier.wait()
            with session_scope(sessions) as session:
                sweep_service.release(session, sweep["id"])
        except Exception as error:  # any error of any thread fails the test below
            errors.append(error)

    threads = [threading.Thread(target=release) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    with sessions() as session:
        live = session.scalar(select(func.count()).where(Job.sweep_id == sweep["id"], Job.status == "queued"))
        released = session.scalar(select(func.count()).where(Job.sweep_id == sweep["id"]))
    assert (live, released) == (2, 3)  # the one free slot filled, once
