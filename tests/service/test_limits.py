"""Admission by the estimate and bounded uploads, through the API: refusals name the field, the figure and the limit."""

from __future__ import annotations

import re

import pytest

from tests.helpers.api import upload
from tests.helpers.hostile import lying_checkpoint, zip_bomb

ADDING = {
    "task": {"type": "adding", "sequence_length": 8, "steps_per_epoch": 5},
    "model": {"cell": "lstm", "hidden_size": 12},
    "method": {"type": "dense"},
    "training": {"epochs": 1, "batch_size": 4},
}


def with_changes(recipe: dict, **changes) -> dict:
    """with_changes(ADDING, model__hidden_size=5): a deep copy with dotted (double-underscore) changes."""
    import copy

    recipe = copy.deepcopy(recipe)
    for dotted, value in changes.items():
        node = recipe
        *path, last = dotted.split("__")
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return recipe


def submit(client, headers, recipe, files=None):
    return client.post("/v1/jobs", headers=headers, json={"recipe": recipe, "files": files or {}})


def figure(message: str, words: str) -> int:
    match = re.search(words + r" is ([\d,]+), over this service's limit of ([\d,]+)", message)
    assert match, message
    return int(match.group(1).replace(",", ""))


def test_a_model_over_the_parameter_limit_is_refused_with_the_figure(client, alice):
    hidden = 65_536  # the schema's largest hidden size: an LSTM of 4 * 65,536^2 recurrent weights alone
    response = submit(client, alice, with_changes(ADDING, model__hidden_size=hidden))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("limit_exceeded", "recipe.model.hidden_size")
    parameters = figure(error["message"], "the model's parameter count")
    # By hand: 4 gates x (hidden x hidden recurrent + hidden x 2 inputs + 2 biases) + a linear read-out.
    assert 4 * hidden * (hidden + 2 + 2) <= parameters <= 4 * hidden * (hidden + 2 + 2) + hidden + 1
    assert "200,000,000 (SPARSEQ_MAX_PARAMETERS)" in error["message"]


def test_training_memory_and_work_limits_name_their_field(client, alice):
    # batch 65,536 of 100,000-step sequences: within the schema, terabytes of activations
    memory = submit(client, alice, with_changes(ADDING, training__batch_size=65_536, task__sequence_length=100_000))
    assert memory.status_code == 422, memory.text
    error = memory.json()["error"]
    assert (error["code"], error["param"]) == ("limit_exceeded", "recipe.training.batch_size")
    assert figure(error["message"], "the estimated training memory in bytes") > 10**12

    epochs, steps = 10_000, 1_000_000
    work = submit(client, alice, with_changes(ADDING, training__epochs=epochs, task__steps_per_epoch=steps))
    assert work.status_code == 422, work.text
    error = work.json()["error"]
    assert (error["code"], error["param"]) == ("limit_exceeded", "recipe.training.epochs")
    assert figure(error["message"], r"the work \(tokens trained on over 1 run\(s\)\)") == epochs * steps * 4 * 8


def test_the_work_of_a_text_job_is_its_file_s_tokens_times_epochs_times_runs(make_app, lm_bytes):
    from fastapi.testclient import TestClient

    from tests.helpers.api import lm_recipe, new_key

    tokens = sum(len(line.split()) for line in lm_bytes.decode().splitlines())
    app = make_app(max_work_tokens=tokens * 3 - 1)  # two runs of one epoch fit, three do not
    headers = {"Authorization": f"Bearer {new_key(app, 'alice')}"}
    with TestClient(app) as client:
        train = upload(client, headers, lm_bytes).json()["id"]
        two = with_changes(lm_recipe(), baselines=["dense_full"])
        assert submit(client, headers, two, {"train": train}).status_code == 201
        three = with_changes(lm_recipe(), baselines=["dense_full", "dense_same_params"])
        refused = submit(client, headers, three, {"train": train})
        assert refused.status_code == 422, refused.text
        message = refused.json()["error"]["message"]
        assert figure(message, r"the work \(tokens trained on over 3 run\(s\)\)") == 3 * tokens


def test_a_time_budget_beyond_the_job_time_limit_is_refused(make_app):
    from fastapi.testclient import TestClient

    from tests.helpers.api import new_key

    app = make_app(job_time_limit_s=600)
    headers = {"Authorization": f"Bearer {new_key(app, 'alice')}"}
    with TestClient(app) as client:
        assert submit(client, headers, with_changes(ADDING, training__time_budget_s=600)).status_code == 201
        response = submit(client, headers, with_changes(ADDING, training__time_budget_s=601))
    error = response.json()["error"]
    assert response.status_code == 422 and error["param"] == "recipe.training.time_budget_s"
    assert "is 601, over this service's limit of 600 (SPARSEQ_JOB_TIME_LIMIT_S)" in error["message"]


@pytest.mark.parametrize(
    ("changes", "param"),
    [
        ({"model__hidden_size": 10**30}, "recipe.model.hidden_size"),
        ({"training__batch_size": 10**9}, "recipe.training.batch_size"),
        ({"task__sequence_length": 10**7}, "recipe.task.sequence_length"),
        ({"training__epochs": 10**9}, "recipe.training.epochs"),
        ({"task": {"type": "navigation", "place_cells": 10**8}}, "recipe.task.place_cells"),
    ],
)
def test_the_absurd_recipes_of_issue_12_are_422s(client, alice, changes, param):
    response = submit(client, alice, with_changes(ADDING, **changes))
    assert response.status_code == 422, response.text
    assert response.json()["error"]["param"] == param


def test_a_zip_bomb_upload_is_refused_and_nothing_is_kept(client, alice, store, tmp_path, make_app):
    bomb = tmp_path / "bomb.npz"
    zip_bomb(bomb, 128 << 20)
    response = upload(client, alice, bomb.read_bytes(), purpose="trajectories", filename="walks.npz")
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("file_refused", "file")
    assert error["message"].startswith("the file was refused: array 'velocity': compressed")
    assert "is this a zip bomb?" in error["message"]
    assert [p for p in store.root.rglob("*") if p.is_file()] == []  # neither a blob nor a staged leftover
    assert client.get("/v1/files", headers=alice).json()["data"] == []


def test_the_lying_checkpoint_is_stored_as_an_invalid_weights_file(client, alice):
    response = upload(client, alice, lying_checkpoint(), purpose="weights", filename="lying.safetensors")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "error" and "declares more than 1,073,741,824 entries" in body["status_details"]
    # ... so no job can use it as init_from
    recipe = with_changes(ADDING, init_from=body["id"])
    refused = submit(client, alice, recipe)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "recipe.init_from"


# -- rate limits ------------------------------------------------------------------------------------------------------


def test_job_creation_is_rate_limited_per_key_with_retry_after(make_app):
    from fastapi.testclient import TestClient

    from tests.helpers.api import new_key

    app = make_app(rate_limit_jobs="3/minute", rate_limit_storage_url="memory://")
    alice = {"Authorization": f"Bearer {new_key(app, 'alice')}"}
    bob = {"Authorization": f"Bearer {new_key(app, 'bob')}"}
    with TestClient(app) as client:
        statuses = [submit(client, alice, ADDING).status_code for _ in range(5)]
        refused = submit(client, alice, ADDING)
        other = submit(client, bob, ADDING)
        reads = client.get("/v1/jobs", headers=alice)
    assert statuses == [201, 201, 201, 429, 429]
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited" and "3 per 1 minute" in refused.json()["error"]["message"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert other.status_code == 201  # per key: bob has his own count
    assert reads.status_code == 200 and len(reads.json()["data"]) == 3  # reads are not limited; 3 jobs exist
    print(f"rate limit drill: 7 submissions, 3 created for alice, 1 for bob, {statuses.count(429) + 1} x 429")


def test_uploads_are_limited_in_the_broker_s_redis_shared_by_api_processes(make_app, lm_bytes):
    """Two apps on one Redis are two API processes: the count is the key's, wherever its requests land."""
    from fastapi.testclient import TestClient

    from tests.helpers.api import new_key

    first, second = make_app(rate_limit_uploads="2/hour"), make_app(rate_limit_uploads="2/hour")
    headers = {"Authorization": f"Bearer {new_key(first, 'alice')}"}
    with TestClient(first) as one, TestClient(second) as two:
        answers = [upload(client, headers, lm_bytes) for client in (one, two, one, two)]
    assert [a.status_code for a in answers] == [201, 201, 429, 429]
    assert 3000 < int(answers[2].headers["Retry-After"]) <= 3600


def test_estimates_are_limited_too(make_app):
    from fastapi.testclient import TestClient

    from tests.helpers.api import new_key

    app = make_app(rate_limit_estimates="2/minute", rate_limit_storage_url="memory://")
    headers = {"Authorization": f"Bearer {new_key(app, 'alice')}"}
    with TestClient(app) as client:
        codes = [client.post("/v1/estimate", headers=headers, json={"recipe": ADDING}).status_code for _ in range(3)]
    assert codes == [200, 200, 429]


def test_a_request_without_a_key_is_answered_by_the_route_not_the_limit(make_app):
    from fastapi.testclient import TestClient

    app = make_app(rate_limit_jobs="1/minute", rate_limit_storage_url="memory://")
    with TestClient(app) as client:
        codes = [client.post("/v1/jobs", json={"recipe": ADDING}).status_code for _ in range(3)]
    assert codes == [401, 401, 401]


# -- /metrics ---------------------------------------------------------------------------------------------------------


def test_metrics_carry_no_per_tenant_detail_and_can_require_their_own_token(make_app, lm_bytes):
    from fastapi.testclient import TestClient

    from tests.helpers.api import new_key

    app = make_app(metrics_token="metrics-token-for-the-scraper")
    alice = {"Authorization": f"Bearer {new_key(app, 'alice-owner')}"}
    bob = {"Authorization": f"Bearer {new_key(app, 'bob-owner')}"}
    with TestClient(app) as client:
        jobs = [submit(client, headers, ADDING).json()["id"] for headers in (alice, bob, bob)]
        anonymous = client.get("/metrics")
        with_a_user_key = client.get("/metrics", headers=alice)
        scraper = client.get("/metrics", headers={"Authorization": "Bearer metrics-token-for-the-scraper"})
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "invalid_token"
    assert with_a_user_key.status_code == 401  # a tenant's key is not the scraper's
    assert scraper.status_code == 200
    text = scraper.text
    assert 'sparseq_jobs{state="queued"} 3.0' in text  # the service's total...
    for detail in ("alice-owner", "bob-owner", "owner", "key_", *jobs):  # ...and nothing per tenant
        assert detail not in text


def test_a_file_deleted_while_its_content_is_requested_is_a_404_not_a_500(app, alice, store, lm_bytes, monkeypatch):
    """The race schemathesis found (GET /content and DELETE side by side): the blob went between the read of the
    file's row and the opening of its bytes."""
    from fastapi.testclient import TestClient

    from service import files as file_service
    from tests.helpers.api import upload_ok

    with TestClient(app, raise_server_exceptions=False) as client:
        created = upload_ok(client, alice, lm_bytes)
        original = file_service.get_file
        calls = []

        def get_then_delete(session, **kwargs):
            found = original(session, **kwargs)
            if not calls:  # right after the route read the row: another request deletes the file and its blob
                calls.append(1)
                assert client.delete(f"/v1/files/{created['id']}", headers=alice).status_code == 200
                assert not store.path(created["sha256"]).exists()
            return found

        monkeypatch.setattr(file_service, "get_file", get_then_delete)
        response = client.get(f"/v1/files/{created['id']}/content", headers=alice)
    assert calls and response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "not_found"


def test_the_dashboards_forms_count_against_the_same_limits_as_the_api(make_app, lm_bytes):
    """The dashboard signs in by cookie (the middleware sees no bearer key): its job form, its estimates and its
    uploads are counted per key with the API's requests, and refused the same way."""
    import json
    import re

    from fastapi.testclient import TestClient

    from tests.helpers.api import new_key

    limits = {"rate_limit_jobs": "2/minute", "rate_limit_estimates": "3/minute", "rate_limit_uploads": "1/minute"}
    app = make_app(rate_limit_storage_url="memory://", **limits)
    key = new_key(app, "alice")
    headers = {"Authorization": f"Bearer {key}"}
    with TestClient(app) as api, TestClient(app, follow_redirects=False) as browser:
        assert browser.post("/ui/signin", data={"api_key": key}).status_code == 303
        assert submit(api, headers, ADDING).status_code == 201  # the API spends one of the two jobs
        form = {"recipe": json.dumps(ADDING), "idempotency_key": "ui-limits"}
        estimated = browser.post("/ui/jobs/new", data={**form, "action": "estimate"})  # estimate 1 of 3
        digest = re.search(r'name="estimated" value="(\w+)"', estimated.text).group(1)
        created = browser.post("/ui/jobs/new", data={**form, "action": "create", "estimated": digest})
        assert created.status_code == 303  # the second job
        form["idempotency_key"] = "ui-limits-2"
        refused = browser.post("/ui/jobs/new", data={**form, "action": "create", "estimated": digest})
        assert refused.status_code == 429 and "too many jobs for this API key" in refused.text
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert submit(api, headers, ADDING).status_code == 429  # and the API agrees: the key's two are spent

        assert api.post("/v1/estimate", headers=headers, json={"recipe": ADDING}).status_code == 200  # 2 of 3
        assert browser.post("/ui/jobs/new", data={**form, "action": "estimate"}).status_code == 200  # 3 of 3
        assert browser.post("/ui/jobs/new", data={**form, "action": "estimate"}).status_code == 429

        uploaded = browser.post("/ui/files", data={"purpose": "lm_text"}, files={"file": ("a.txt", lm_bytes)})
        assert uploaded.status_code == 303
        again = browser.post("/ui/files", data={"purpose": "lm_text"}, files={"file": ("b.txt", lm_bytes)})
        assert again.status_code == 429 and "too many uploads" in again.text
        assert len(api.get("/v1/files", headers=headers).json()["data"]) == 1  # the refused upload stored nothing
        assert len(api.get("/v1/jobs", headers=headers).json()["data"]) == 2
