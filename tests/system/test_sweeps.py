"""A sweep through `sparseqd serve` (real HTTP, the embedded Redis, a real Celery worker): a 2 x 2 grid x 2 seeds of
the tiny navigation recipe, max_parallel observed, the summary recomputed here with ``statistics`` from the children's
own metrics; a refused combination queues nothing; a running sweep is cancelled."""

from __future__ import annotations

import json
import statistics
import time

import pytest

from tests.helpers.processes import navigation_recipe, served

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
GRID = {"model.hidden_size": [16, 24], "method.target_sparsity": [0.5, 0.8], "training.seed": [1, 2]}


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    with served(tmp_path_factory.mktemp("sweeps") / "data") as server:
        yield server.client()


def test_a_sweep_respects_max_parallel_and_summarises_its_children(api):
    body = {"recipe": navigation_recipe(steps_per_epoch=2, epochs=1), "grid": GRID, "max_parallel": 2}
    response = api.http.post("/v1/sweeps", json=body)
    assert response.status_code == 201, response.text
    sweep_id, most_live = response.json()["id"], 0
    deadline = time.monotonic() + 300
    while True:
        sweep = api.http.get(f"/v1/sweeps/{sweep_id}").json()
        live = sum(n for status, n in sweep["progress"].items() if status in ("queued", "running", "cancelling"))
        most_live = max(most_live, live)
        if sweep["status"] != "running" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert sweep["status"] == "succeeded", sweep
    assert 1 <= most_live <= 2
    jobs = [api.job(job_id) for job_id in sweep["jobs"]]
    assert len(jobs) == 8 and all(j["status"] == "succeeded" for j in jobs)
    by_cell: dict[tuple, list[float]] = {}
    for job in jobs:
        cell = (job["recipe"]["model"]["hidden_size"], job["recipe"]["method"]["target_sparsity"])
        by_cell.setdefault(cell, []).append(job["metrics"]["value"])
    for row in sweep["summary"]["cells"]:
        values = by_cell[(row["overrides"]["model.hidden_size"], row["overrides"]["method.target_sparsity"])]
        assert row["n"] == 2
        assert row["value_mean"] == pytest.approx(statistics.mean(values))
        assert row["value_std"] == pytest.approx(statistics.stdev(values))
    artifacts = sweep_artifacts(api, sweep_id)  # made by the worker that ended the last child, just after
    assert set(artifacts) == {"summary.json", "summary.csv", "pareto.png"}
    summary = api.http.get(f"/v1/artifacts/{artifacts['summary.json']['id']}/content")
    assert summary.status_code == 200 and summary.json() == sweep["summary"]
    picture = api.http.get(f"/v1/artifacts/{artifacts['pareto.png']['id']}/content").content
    assert picture.startswith(b"\x89PNG") and len(picture) > 10_000


def sweep_artifacts(api, sweep_id: str, timeout: float = 30) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    while True:
        listed = api.http.get(f"/v1/sweeps/{sweep_id}/artifacts").json()["data"]
        if len(listed) == 3 or time.monotonic() > deadline:
            return {a["filename"]: a for a in listed}
        time.sleep(0.2)


def test_a_bad_combination_queues_nothing(api):
    before = api.http.get("/v1/jobs", params={"limit": 100}).json()["data"]
    body = {"recipe": navigation_recipe(), "grid": {"model.hidden_size": [16, 0]}}
    response = api.http.post("/v1/sweeps", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["param"].startswith("combinations[1]")
    assert api.http.get("/v1/jobs", params={"limit": 100}).json()["data"] == before


def test_cancel_a_running_sweep(api):
    body = {
        "recipe": navigation_recipe(steps_per_epoch=1_000_000, epochs=1),
        "grid": {"training.seed": [1, 2, 3]},
        "max_parallel": 1,
    }
    sweep = api.http.post("/v1/sweeps", json=body).json()
    api.wait(sweep["jobs"][0], timeout=120, until=lambda j: j["status"] == "running")
    cancelled = api.http.post(f"/v1/sweeps/{sweep['id']}/cancel").json()
    assert cancelled["status"] == "cancelled" and cancelled["progress"]["held"] == 0
    ended = api.wait(sweep["jobs"][0], timeout=30)
    assert ended["status"] == "cancelled"
    time.sleep(1)
    assert len(api.http.get(f"/v1/sweeps/{sweep['id']}").json()["jobs"]) == 1, json.dumps(cancelled)
    assert set(sweep_artifacts(api, sweep["id"], timeout=1)) == {"summary.json", "summary.csv", "pareto.png"}
