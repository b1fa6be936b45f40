"""Sweeps over the API with a real broker (no worker): validation before any job, max_parallel, release, summary,
cancel, ownership. The summary is checked against figures computed here with ``statistics``."""

from __future__ import annotations

import statistics

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
