"""POST/GET /v1/jobs, cancel, events, artifacts: validated, committed, then enqueued on the real broker."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections import Counter
from datetime import timedelta

import httpx
import pytest
import torch
from fastapi.testclient import TestClient
from sqlalchemy import event, select

from service.auth import KeyCache
from service.queue import CeleryQueue
from service.tables import Job, JobEvent, utcnow
from tests.helpers.api import (
    add_artifact,
    broker_messages,
    changed,
    create_job,
    create_job_ok,
    error,
    lm_recipe,
    new_key,
    tagging_recipe,
    upload_ok,
)


def set_status(sessions, job_id: str, status: str) -> None:
    with sessions() as session:
        session.get(Job, job_id).status = status
        session.commit()


# -- create -------------------------------------------------------------------------------------------------------


@pytest.mark.databases
def test_create_commits_a_queued_job_and_puts_exactly_one_message_on_the_broker(client, alice, broker, train_file):
    response = create_job(client, alice, train_file["id"])

    assert response.status_code == 201, response.text
    job = response.json()
    assert job["object"] == "job"
    assert job["id"].startswith("job_")
    assert job["status"] == "queued"
    assert job["files"] == {"train": train_file["id"]}
    assert job["progress"] == 0.0
    assert job["error"] is None
    assert job["attempts"] == 0
    assert job["started_at"] is None and job["finished_at"] is None
    assert abs(job["created_at"] - time.time()) < 60
    # the recipe is stored normalised: defaults the request left out are filled in
    assert job["recipe"]["version"] == 1
    assert job["recipe"]["model"]["cell"] == "lstm"
    assert job["recipe"]["training"]["bptt"] == 10

    assert broker.llen("jobs") == 1
    assert broker_messages(broker) == [{"task": "sparseq.run_job", "args": [job["id"]], "kwargs": {}}]
    assert client.get(f"/v1/jobs/{job['id']}", headers=alice).json() == job


def test_a_new_job_has_one_queued_event(client, alice, train_file):
    job = create_job_ok(client, alice, train_file["id"])
    events = client.get(f"/v1/jobs/{job['id']}/events", headers=alice).json()
    assert [(e["level"], e["type"], e["message"]) for e in events["data"]] == [("info", "message", "job queued")]
    assert events["data"][0]["object"] == "job.event"
    assert events["data"][0]["id"].startswith("evt_")


def navigation_weights(hidden: int, place_cells: int) -> bytes:
    """The tensors of the navigation model with an LSTM cell (no biases), by hand: encoder (start code -> state),
    the LSTM's packed four gates, decoder (state -> place cells)."""
    from safetensors.torch import save

    shapes = {
        "encoder.weight": (hidden, place_cells),
        "rnn.weight_ih_l0": (4 * hidden, 2),
        "rnn.weight_hh_l0": (4 * hidden, hidden),
        "decoder.weight": (place_cells, hidden),
    }
    return save({name: torch.zeros(shape) for name, shape in shapes.items()})


def test_jobs_for_every_task_accept_their_files(client, alice, broker, conll_bytes, npz_bytes):
    conll = upload_ok(client, alice, conll_bytes, purpose="tagging_conll")
    paths = upload_ok(client, alice, npz_bytes, purpose="trajectories")
    weights = upload_ok(client, alice, navigation_weights(32, 16), purpose="weights")
    navigation = {
        "task": {"type": "navigation", "place_cells": 16, "sequence_length": 5},
        "model": {"hidden_size": 32},
        "method": {"type": "moduli_pruning", "space": "torus"},
        "init_from": weights["id"],
    }
    adding = {"task": {"type": "adding"}, "model": {"hidden_size": 8}, "method": {"type": "dense"}}
    bodies = [
        {"recipe": tagging_recipe(), "files": {"train": conll["id"], "valid": conll["id"]}},
        {"recipe": navigation, "files": {"train": paths["id"]}},
        {"recipe": adding, "files": {}},
    ]
    ids = []
    for body in bodies:
        response = client.post("/v1/jobs", headers=alice, json=body)
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    assert [m["args"] for m in broker_messages(broker)] == [[i] for i in reversed(ids)]  # LPUSH: newest at the head
    # init_from counts as a use of the weights file
    response = client.delete(f"/v1/files/{weights['id']}", headers=alice)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "file_in_use"


def test_weights_that_do_not_fit_the_recipe_are_refused_with_their_names(client, alice, broker, weights_bytes):
    weights = upload_ok(client, alice, weights_bytes, purpose="weights")  # rnn.weight_hh_l0 (8, 2), decoder.bias (5,)
    recipe = {
        "task": {"type": "navigation", "place_cells": 16},
        "model": {"cell": "rnn_relu", "hidden_size": 32},
        "method": {"type": "magnitude_pruning"},
        "init_from": weights["id"],
    }
    response = client.post("/v1/jobs", headers=alice, json={"recipe": recipe})
    assert response.status_code == 422
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("weights_mismatch", "recipe.init_from")
    assert "missing decoder.weight, encoder.weight, rnn.weight_ih_l0" in error["message"]
    assert "unexpected decoder.bias" in error["message"]
    assert "rnn.weight_hh_l0 is (8, 2), the recipe needs (32, 32)" in error["message"]
    assert broker_messages(broker) == []  # nothing queued


def test_text_weights_without_their_vocabulary_are_refused(client, alice, broker, lm_bytes, weights_bytes):
    train = upload_ok(client, alice, lm_bytes, purpose="lm_text")
    weights = upload_ok(client, alice, weights_bytes, purpose="weights")
    recipe = lm_recipe(**{"method": {"type": "magnitude_pruning"}, "init_from": weights["id"]})
    response = client.post("/v1/jobs", headers=alice, json={"recipe": recipe, "files": {"train": train["id"]}})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "vocabulary_required"
    assert response.json()["error"]["param"] == "files.vocabulary"


@pytest.mark.parametrize(
    ("path", "value", "param", "message"),
    [
        ("model.hidden_size", 0, "recipe.model.hidden_size", "Input should be greater than or equal to 1"),
        (
            "method.recurrent.input_density",
            1.5,
            "recipe.method.recurrent.input_density",
            "Input should be less than or equal to 1",
        ),
        ("training.epoch", 3, "recipe.training.epoch", "Extra inputs are not permitted"),
        ("model.cell", "transformer", "recipe.model.cell", "Input should be 'lstm', 'gru', 'rnn_tanh' or 'rnn_relu'"),
        (
            "model.bidirectional",
            True,
            "recipe.model.bidirectional",
            "model.bidirectional must be false: a language model cannot be bidirectional (it would see the words it "
            "must predict)",
        ),
        (
            "method.recurrent.input_density",
            0.1,
            "recipe.method.recurrent",
            "input_density (0.1) must be at least 1/components (1/4): otherwise some input features are read by no "
            "component",
        ),
    ],
)
@pytest.mark.databases
def test_recipe_errors_are_422_naming_the_field(path, value, param, message, client, alice, broker, train_file):
    response = create_job(client, alice, train_file["id"], recipe=changed(lm_recipe(), path, value))

    assert response.status_code == 422
    assert response.json() == error("invalid_recipe", message, param)
    assert client.get("/v1/jobs", headers=alice).json()["data"] == []
    assert broker.llen("jobs") == 0


def test_a_recipe_missing_its_model_is_422(client, alice, train_file):
    recipe = lm_recipe()
    del recipe["model"]
    response = create_job(client, alice, train_file["id"], recipe=recipe)
    assert response.status_code == 422
    assert response.json() == error("invalid_recipe", "Field required", "recipe.model")


def test_an_unknown_top_level_field_is_422(client, alice, train_file):
    body = {"recipe": lm_recipe(), "files": {"train": train_file["id"]}, "priority": "high"}
    response = client.post("/v1/jobs", headers=alice, json=body)
    assert response.status_code == 422
    assert response.json() == error("invalid_request", "Extra inputs are not permitted", "priority")


def test_a_body_that_is_not_json_is_422_without_a_bogus_param(client, alice):
    response = client.post("/v1/jobs", headers={**alice, "Content-Type": "application/json"}, content=b"{bad json")
    assert response.status_code == 422
    assert response.json() == error("invalid_request", "JSON decode error", None)


def test_an_idempotency_key_over_255_characters_is_422(client, alice, broker, train_file):
    response = create_job(client, alice, train_file["id"], key="k" * 256)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_request"
    assert response.json()["error"]["param"].lower() == "idempotency-key"
    assert broker.llen("jobs") == 0


def test_a_missing_required_file_is_400(client, alice, broker):
    response = client.post("/v1/jobs", headers=alice, json={"recipe": lm_recipe(), "files": {}})
    assert response.status_code == 400
    assert response.json() == error("bad_request", "the language_model task needs a 'train' file", "files.train")
    assert broker.llen("jobs") == 0


def test_a_role_the_task_does_not_take_is_400(client, alice, train_file):
    files = {"train": train_file["id"], "test": train_file["id"]}
    response = client.post("/v1/jobs", headers=alice, json={"recipe": lm_recipe(), "files": files})
    assert response.status_code == 400
    assert response.json() == error(
        "bad_request",
        "the language_model task takes no 'test' file (it takes ['train', 'valid', 'vocabulary'])",
        "files.test",
    )


def test_a_file_of_the_wrong_purpose_is_400(client, alice, conll_bytes):
    conll = upload_ok(client, alice, conll_bytes, purpose="tagging_conll")
    response = create_job(client, alice, conll["id"])
    assert response.status_code == 400
    assert response.json() == error(
        "bad_request", f"file {conll['id']} has purpose 'tagging_conll', this role needs 'lm_text'", "files.train"
    )


def test_a_file_that_failed_validation_is_400(client, alice, broker):
    bad = upload_ok(client, alice, b"fine\n\xc3\x28 broken\n")
    assert bad["status"] == "error"
    response = create_job(client, alice, bad["id"])
    assert response.status_code == 400
    assert response.json() == error(
        "bad_request",
        f"file {bad['id']} did not pass validation: line 2: not valid UTF-8 (byte 1 of the line)",
        "files.train",
    )
    assert broker.llen("jobs") == 0


@pytest.mark.parametrize("whose", ["bob", "nobody", "deleted"])
def test_a_file_the_caller_cannot_see_is_404(whose, client, alice, bob, broker, lm_bytes):
    if whose == "bob":
        file_id = upload_ok(client, bob, lm_bytes)["id"]
    elif whose == "deleted":
        file_id = upload_ok(client, alice, lm_bytes)["id"]
        assert client.delete(f"/v1/files/{file_id}", headers=alice).status_code == 200
    else:
        file_id = "file_000000000000000000000000"
    response = create_job(client, alice, file_id)
    assert response.status_code == 404
    assert response.json() == error("not_found", f"no file {file_id!r}", "files.train")
    assert broker.llen("jobs") == 0


def test_init_from_another_owners_weights_is_404(client, alice, bob, train_file, weights_bytes):
    weights = upload_ok(client, bob, weights_bytes, purpose="weights")
    recipe = lm_recipe(init_from=weights["id"])
    response = create_job(client, alice, train_file["id"], recipe=recipe)
    assert response.status_code == 404
    assert response.json() == error("not_found", f"no file {weights['id']!r}", "recipe.init_from")


# -- idempotency --------------------------------------------------------------------------------------------------


@pytest.mark.databases
def test_same_idempotency_key_and_body_returns_the_same_job_once(client, alice, broker, train_file):
    first = create_job(client, alice, train_file["id"], key="retry-1")
    second = create_job(client, alice, train_file["id"], key="retry-1")

    assert first.status_code == 201
    assert second.status_code == 200
    assert second.json() == first.json()
    assert broker_messages(broker) == [{"task": "sparseq.run_job", "args": [first.json()["id"]], "kwargs": {}}]
    assert [j["id"] for j in client.get("/v1/jobs", headers=alice).json()["data"]] == [first.json()["id"]]


def test_the_same_body_with_keys_in_another_order_is_the_same_request(client, alice, broker, train_file):
    first = create_job_ok(client, alice, train_file["id"], key="k")
    reordered = {key: value for key, value in reversed(lm_recipe().items())}
    second = client.post(
        "/v1/jobs",
        headers={**alice, "Idempotency-Key": "k"},
        json={"files": {"train": train_file["id"]}, "recipe": reordered},
    )
    assert second.status_code == 200
    assert second.json()["id"] == first["id"]
    assert broker.llen("jobs") == 1


@pytest.mark.databases
def test_same_idempotency_key_with_another_body_is_409(client, alice, broker, train_file):
    first = create_job_ok(client, alice, train_file["id"], key="retry-1")
    other = lm_recipe(**{"training.epochs": 2})
    response = create_job(client, alice, train_file["id"], recipe=other, key="retry-1")

    assert response.status_code == 409
    assert response.json() == error(
        "idempotency_key_reused", "this Idempotency-Key was used with a different request body", "Idempotency-Key"
    )
    assert broker.llen("jobs") == 1
    assert [j["id"] for j in client.get("/v1/jobs", headers=alice).json()["data"]] == [first["id"]]


def test_idempotency_keys_belong_to_one_owner(client, alice, bob, broker, train_file, lm_bytes):
    bobs_file = upload_ok(client, bob, lm_bytes)
    mine = create_job_ok(client, alice, train_file["id"], key="shared")
    response = create_job(client, bob, bobs_file["id"], key="shared")
    assert response.status_code == 201
    assert response.json()["id"] != mine["id"]
    assert broker.llen("jobs") == 2


def test_without_an_idempotency_key_each_post_is_a_new_job(client, alice, broker, train_file):
    first = create_job_ok(client, alice, train_file["id"])
    second = create_job_ok(client, alice, train_file["id"])
    assert first["id"] != second["id"]
    assert broker.llen("jobs") == 2


@pytest.mark.databases
def test_concurrent_posts_with_one_idempotency_key_make_one_job(app, alice, broker, train_file):
    """The unique (owner, idempotency_key) constraint settles a race that the first lookup cannot see."""
    barrier, results = threading.Barrier(6), []

    def post() -> None:
        with TestClient(app) as client:
            barrier.wait()
            response = client.post(
                "/v1/jobs",
                headers={**alice, "Idempotency-Key": "race"},
                json={"recipe": lm_recipe(), "files": {"train": train_file["id"]}},
            )
            results.append((response.status_code, response.json().get("id")))

    threads = [threading.Thread(target=post) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert Counter(status for status, _ in results) == {201: 1, 200: 5}
    assert len({job_id for _, job_id in results}) == 1
    assert [m["args"] for m in broker_messages(broker)] == [[results[0][1]]]


# -- get and list -------------------------------------------------------------------------------------------------


def test_get_an_unknown_job_is_404(client, alice):
    response = client.get("/v1/jobs/job_nope", headers=alice)
    assert response.status_code == 404
    assert response.json() == error("not_found", "no job 'job_nope'", "job_id")


def test_concurrent_polls_share_one_key_lookup_and_one_read(app, client, alice):
    """50 clients poll a job whose cache entries (the key's, the job's) have expired: they wait for one key lookup
    and one read of the job, not one each, and no poll holds a pooled connection (15 at most) while it waits."""
    recipe = {"task": {"type": "adding"}, "model": {"cell": "rnn_relu", "hidden_size": 8}, "method": {"type": "dense"}}
    job = client.post("/v1/jobs", json={"recipe": recipe}, headers=alice).json()
    app.state.key_cache = KeyCache()  # cold, as when the 5 s entry of a busy key expires
    statements: list[str] = []
    event.listen(app.state.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))

    async def poll(clients: int) -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sparseq", headers=alice) as http:
            polls = asyncio.gather(*(http.get(f"/v1/jobs/{job['id']}") for _ in range(clients)))
            return await asyncio.wait_for(polls, timeout=20)

    responses = asyncio.run(poll(50))
    assert [r.status_code for r in responses] == [200] * 50
    assert all(r.json() == job for r in responses)
    selects = [s.split("FROM ", 1)[1].split()[0] for s in statements if s.lstrip().startswith("SELECT")]
    assert sorted(selects) == ["api_keys", "jobs"]


@pytest.mark.databases
def test_list_filters_by_status_and_pages_newest_first(client, alice, bob, train_file, lm_bytes):
    ids = [create_job_ok(client, alice, train_file["id"])["id"] for _ in range(4)]
    create_job_ok(client, bob, upload_ok(client, bob, lm_bytes)["id"])
    client.post(f"/v1/jobs/{ids[1]}/cancel", headers=alice)

    def listed(**params):
        response = client.get("/v1/jobs", headers=alice, params=params)
        assert response.status_code == 200, response.text
        return response.json()

    assert [j["id"] for j in listed()["data"]] == ids[::-1]
    assert [j["id"] for j in listed(status="queued")["data"]] == [ids[3], ids[2], ids[0]]
    assert [j["id"] for j in listed(status="cancelled")["data"]] == [ids[1]]
    assert listed(status="running")["data"] == []

    first = listed(status="queued", limit=2)
    assert ([j["id"] for j in first["data"]], first["has_more"]) == ([ids[3], ids[2]], True)
    second = listed(status="queued", limit=2, after=first["last_id"])
    assert ([j["id"] for j in second["data"]], second["has_more"]) == ([ids[0]], False)
    assert (second["first_id"], second["last_id"]) == (ids[0], ids[0])


def test_list_rejects_an_unknown_status(client, alice):
    response = client.get("/v1/jobs", headers=alice, params={"status": "done"})
    assert response.status_code == 422
    body = response.json()
    assert body["error"]["code"] == "invalid_request"
    assert body["error"]["param"] == "status"
    assert "'queued'" in body["error"]["message"]


# -- cancel -------------------------------------------------------------------------------------------------------


@pytest.mark.databases
def test_cancel_a_queued_job_is_idempotent(client, alice, train_file):
    job = create_job_ok(client, alice, train_file["id"])

    first = client.post(f"/v1/jobs/{job['id']}/cancel", headers=alice)
    assert first.status_code == 200
    assert first.json()["status"] == "cancelled"
    assert first.json()["finished_at"] is not None
    again = client.post(f"/v1/jobs/{job['id']}/cancel", headers=alice)
    assert again.status_code == 200
    assert again.json() == first.json()
    assert client.get(f"/v1/jobs/{job['id']}", headers=alice).json()["status"] == "cancelled"
    messages = [e["message"] for e in client.get(f"/v1/jobs/{job['id']}/events", headers=alice).json()["data"]]
    assert messages == ["job cancelled before it started", "job queued"]


def test_cancel_a_running_job_asks_the_worker(client, alice, sessions, train_file):
    job = create_job_ok(client, alice, train_file["id"])
    set_status(sessions, job["id"], "running")

    first = client.post(f"/v1/jobs/{job['id']}/cancel", headers=alice)
    assert first.status_code == 200
    assert first.json()["status"] == "cancelling"
    assert first.json()["finished_at"] is None
    assert client.post(f"/v1/jobs/{job['id']}/cancel", headers=alice).json()["status"] == "cancelling"


@pytest.mark.parametrize("finished", ["succeeded", "failed"])
@pytest.mark.databases
def test_cancel_a_finished_job_is_409(finished, client, alice, sessions, train_file):
    job = create_job_ok(client, alice, train_file["id"])
    set_status(sessions, job["id"], finished)

    response = client.post(f"/v1/jobs/{job['id']}/cancel", headers=alice)
    assert response.status_code == 409
    assert response.json() == error("job_finished", f"job {job['id']} has already {finished}", "job_id")
    assert client.get(f"/v1/jobs/{job['id']}", headers=alice).json()["status"] == finished


# -- events -------------------------------------------------------------------------------------------------------


@pytest.mark.databases
def test_events_page_newest_first(client, alice, sessions, train_file):
    job = create_job_ok(client, alice, train_file["id"])
    with sessions() as session:
        base = utcnow()
        for step in range(1, 5):
            session.add(
                JobEvent(
                    job_id=job["id"],
                    created_at=base + timedelta(seconds=step),
                    level="info",
                    type="metrics",
                    message=f"step {step}",
                    data={"step": step, "loss": 5.0 - step},
                )
            )
        session.commit()
        ids = [f"evt_{i}" for i in session.scalars(select(JobEvent.id).order_by(JobEvent.id.desc()))]

    seen, after = [], None
    pages = []
    while True:
        params = {"limit": 2, **({"after": after} if after else {})}
        response = client.get(f"/v1/jobs/{job['id']}/events", headers=alice, params=params)
        assert response.status_code == 200
        page = response.json()
        pages.append(([e["id"] for e in page["data"]], page["has_more"]))
        seen.extend(page["data"])
        assert (page["first_id"], page["last_id"]) == (page["data"][0]["id"], page["data"][-1]["id"])
        if not page["has_more"]:
            break
        after = page["last_id"]

    assert pages == [(ids[0:2], True), (ids[2:4], True), (ids[4:5], False)]
    assert [e["message"] for e in seen] == ["step 4", "step 3", "step 2", "step 1", "job queued"]
    assert seen[0]["type"] == "metrics"
    assert seen[0]["data"] == {"step": 4, "loss": 1.0}


def test_an_event_cursor_is_checked_like_other_lists(client, alice, train_file):
    job = create_job_ok(client, alice, train_file["id"])
    malformed = client.get(f"/v1/jobs/{job['id']}/events", headers=alice, params={"after": "job_x"})
    assert (malformed.status_code, malformed.json()["error"]["param"]) == (422, "after")  # not an id at all
    events = client.get(f"/v1/jobs/{job['id']}/events", headers=alice).json()["data"]
    assert events and all(e["id"].startswith("evt_") for e in events)
    after_last = client.get(f"/v1/jobs/{job['id']}/events", headers=alice, params={"after": events[-1]["id"]})
    assert after_last.status_code == 200 and after_last.json()["data"] == []  # event ids count: nothing older


# -- artifacts ----------------------------------------------------------------------------------------------------


def test_a_new_job_has_no_artifacts(client, alice, train_file):
    job = create_job_ok(client, alice, train_file["id"])
    response = client.get(f"/v1/jobs/{job['id']}/artifacts", headers=alice)
    assert response.status_code == 200
    assert response.json() == {"object": "list", "data": [], "has_more": False, "first_id": None, "last_id": None}


@pytest.mark.databases
def test_an_artifact_downloads_whole_and_by_range(client, alice, sessions, store, train_file):
    job = create_job_ok(client, alice, train_file["id"])
    data = bytes(range(256)) * 40
    artifact_id = add_artifact(sessions, store, job["id"], "alice", data)
    digest = hashlib.sha256(data).hexdigest()

    listed = client.get(f"/v1/jobs/{job['id']}/artifacts", headers=alice).json()
    assert [(a["id"], a["object"], a["kind"], a["bytes"], a["sha256"]) for a in listed["data"]] == [
        (artifact_id, "artifact", "checkpoint", len(data), digest)
    ]
    assert client.get(f"/v1/artifacts/{artifact_id}", headers=alice).json()["job_id"] == job["id"]

    whole = client.get(f"/v1/artifacts/{artifact_id}/content", headers=alice)
    assert whole.status_code == 200
    assert whole.content == data
    assert whole.headers["x-content-sha256"] == digest
    assert whole.headers["accept-ranges"] == "bytes"

    part = client.get(f"/v1/artifacts/{artifact_id}/content", headers={**alice, "Range": "bytes=0-9"})
    assert part.status_code == 206
    assert part.content == data[:10]
    assert part.headers["content-range"] == f"bytes 0-9/{len(data)}"

    tail = client.get(f"/v1/artifacts/{artifact_id}/content", headers={**alice, "Range": "bytes=10000-"})
    assert tail.status_code == 206
    assert tail.content == data[10000:]


def test_an_unknown_artifact_is_404(client, alice):
    for path in ("/v1/artifacts/art_nope", "/v1/artifacts/art_nope/content"):
        response = client.get(path, headers=alice)
        assert response.status_code == 404
        assert response.json() == error("not_found", "no artifact 'art_nope'", "artifact_id")


@pytest.mark.databases
def test_another_owner_gets_404_on_every_job_route(client, alice, bob, sessions, store, train_file):
    job = create_job_ok(client, alice, train_file["id"])
    artifact_id = add_artifact(sessions, store, job["id"], "alice", b"weights" * 10)
    no_job = error("not_found", f"no job {job['id']!r}", "job_id")
    no_artifact = error("not_found", f"no artifact {artifact_id!r}", "artifact_id")

    for method, path, expected in [
        ("GET", f"/v1/jobs/{job['id']}", no_job),
        ("GET", f"/v1/jobs/{job['id']}/events", no_job),
        ("POST", f"/v1/jobs/{job['id']}/cancel", no_job),
        ("GET", f"/v1/jobs/{job['id']}/artifacts", no_job),
        ("GET", f"/v1/artifacts/{artifact_id}", no_artifact),
        ("GET", f"/v1/artifacts/{artifact_id}/content", no_artifact),
    ]:
        response = client.request(method, path, headers=bob)
        assert response.status_code == 404, path
        assert response.json() == expected, path
    assert client.get("/v1/jobs", headers=bob).json()["data"] == []
    assert client.get(f"/v1/jobs/{job['id']}", headers=alice).json()["status"] == "queued"  # bob's cancel did nothing


# -- the broker is down -------------------------------------------------------------------------------------------


@pytest.mark.databases
def test_broker_down_is_503_quickly_and_the_job_is_failed_not_left_queued(make_app, tmp_path, lm_bytes):
    app = make_app(queue=CeleryQueue(f"redis+socket://{tmp_path / 'no-such-broker.sock'}"))
    alice = {"Authorization": f"Bearer {new_key(app, 'alice')}"}
    with TestClient(app) as client:
        train = upload_ok(client, alice, lm_bytes)
        started = time.monotonic()
        response = create_job(client, alice, train["id"])
        elapsed = time.monotonic() - started

        assert response.status_code == 503
        assert response.json() == error(
            "queue_unavailable", "the job queue is unreachable; the job was not started", None
        )
        assert elapsed < 10
        jobs = client.get("/v1/jobs", headers=alice).json()["data"]
        assert len(jobs) == 1
        assert jobs[0]["status"] == "failed"
        assert jobs[0]["error"]["code"] == "queue_unavailable"
        assert jobs[0]["finished_at"] is not None
        assert client.get("/v1/jobs", headers=alice, params={"status": "queued"}).json()["data"] == []
        # a failed job does not hold its file
        assert client.delete(f"/v1/files/{train['id']}", headers=alice).status_code == 200

        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json() == {"status": "unavailable", "checks": {"database": True, "broker": False}}


def test_a_cancel_is_visible_at_once_despite_the_polling_cache(client, alice, sessions):
    recipe = {"task": {"type": "adding"}, "model": {"cell": "rnn_relu", "hidden_size": 8}, "method": {"type": "dense"}}
    job_id = client.post("/v1/jobs", json={"recipe": recipe}, headers=alice).json()["id"]
    set_status(sessions, job_id, "running")  # a worker picked it up
    assert client.get(f"/v1/jobs/{job_id}", headers=alice).json()["status"] == "running"  # read, then cached
    assert client.post(f"/v1/jobs/{job_id}/cancel", headers=alice).json()["status"] == "cancelling"
    assert client.get(f"/v1/jobs/{job_id}", headers=alice).json()["status"] == "cancelling"
