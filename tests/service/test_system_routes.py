"""/healthz, /readyz, /metrics and POST /v1/estimate."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from compress.pipeline import build_model
from compress.spec import Recipe
from tests.helpers.api import create_job_ok, error, lm_recipe


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.databases
def test_readyz_with_the_real_broker(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"database": True, "broker": True}}


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """Prometheus text -> {(sample name, sorted labels): value}, read by prometheus_client's own parser."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.mark.databases
def test_metrics_counts_jobs_by_state_queue_depth_and_latency(client, alice, broker, train_file):
    ids = [create_job_ok(client, alice, train_file["id"])["id"] for _ in range(3)]
    client.post(f"/v1/jobs/{ids[0]}/cancel", headers=alice)

    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    values = samples(response.text)
    assert values[("sparseq_jobs", (("state", "queued"),))] == 2
    assert values[("sparseq_jobs", (("state", "cancelled"),))] == 1
    assert values[("sparseq_jobs", (("state", "running"),))] == 0
    # the broker holds all three messages (a cancelled job's message stays; the worker skips it)
    assert values[("sparseq_queue_depth", ())] == broker.llen("jobs") == 3
    assert values[("sparseq_request_seconds_count", (("method", "POST"), ("route", "/v1/jobs")))] == 3
    assert values[("sparseq_request_seconds_count", (("method", "POST"), ("route", "/v1/files")))] == 1
    assert values[("sparseq_request_seconds_count", (("method", "POST"), ("route", "/v1/jobs/{job_id}/cancel")))] == 1


# -- estimate -----------------------------------------------------------------------------------------------------


def dense_lm(cell: str, layers: int) -> dict:
    return {
        "task": {"type": "language_model", "max_vocab": 300},
        "model": {"cell": cell, "embedding_size": 12, "hidden_size": 20, "num_layers": layers},
        "method": {"type": "dense"},
    }


def closed_form(vocab: int, embedding: int, hidden: int, layers: int, gates: int) -> int:
    """Embedding + stacked torch recurrent layers (two bias vectors each) + decoder with bias."""
    recurrent = sum(
        gates * ((embedding if i == 0 else hidden) * hidden + hidden * hidden + 2 * hidden) for i in range(layers)
    )
    return vocab * embedding + recurrent + hidden * vocab + vocab


def built_parameters(recipe: dict, vocab: int) -> tuple[int, int]:
    """(all parameters, parameters in matrices) of the model the pipeline really builds, on the CPU."""
    model = build_model(Recipe.model_validate(recipe), {"vocab_size": vocab, "num_tags": 45})
    parameters = list(model.parameters())
    return sum(p.numel() for p in parameters), sum(p.numel() for p in parameters if p.dim() >= 2)


@pytest.mark.parametrize(("cell", "layers", "gates"), [("lstm", 1, 4), ("gru", 2, 3), ("rnn_tanh", 1, 1)])
def test_estimate_counts_the_parameters_of_the_model_that_would_be_built(cell, layers, gates, client, alice):
    recipe = dense_lm(cell, layers)
    response = client.post("/v1/estimate", headers=alice, json={"recipe": recipe})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "estimate"
    expected = closed_form(300, 12, 20, layers, gates)
    assert built_parameters(recipe, 300)[0] == expected
    assert body["parameters"] == expected
    assert body["nonzero_parameters"] == expected
    assert body["dense_checkpoint_bytes"] == 4 * expected
    assert body["flops_per_step"] > body["flops_per_token"] > 0
    assert body["training_memory_bytes"] > body["dense_checkpoint_bytes"]


def test_estimate_uses_the_vocab_size_it_is_given(client, alice):
    recipe = dense_lm("lstm", 1)
    response = client.post("/v1/estimate", headers=alice, json={"recipe": recipe, "vocab_size": 1000})
    assert response.json()["parameters"] == closed_form(1000, 12, 20, 1, 4)


def test_estimate_of_a_predefined_recipe_matches_the_built_model(client, alice):
    recipe = lm_recipe()
    body = client.post("/v1/estimate", headers=alice, json={"recipe": recipe}).json()
    built, _ = built_parameters(recipe, 500)
    assert body["parameters"] == built
    assert body["parameters"] < closed_form(500, 16, 16, 1, 4)  # sparse recurrent layer: fewer than dense


def test_estimate_of_magnitude_pruning_keeps_one_minus_target_of_the_matrices(client, alice):
    recipe = dense_lm("lstm", 2)
    recipe["method"] = {"type": "magnitude_pruning", "target_sparsity": 0.8}
    body = client.post("/v1/estimate", headers=alice, json={"recipe": recipe}).json()

    parameters, matrices = built_parameters(recipe, 300)
    biases = parameters - matrices
    assert body["parameters"] == parameters
    assert abs(body["nonzero_parameters"] - (0.2 * matrices + biases)) <= 1
    assert body["checkpoint_bytes"] < body["dense_checkpoint_bytes"]


def test_estimate_of_a_tagger_counts_its_bidirectional_layer_and_tag_count(client, alice):
    recipe = {
        "task": {"type": "sequence_tagging", "max_vocab": 400},
        "model": {"embedding_size": 10, "hidden_size": 14, "bidirectional": True},
        "method": {"type": "dense"},
    }
    body = client.post("/v1/estimate", headers=alice, json={"recipe": recipe, "num_tags": 17}).json()
    vocab, embedding, hidden, tags = 400, 10, 14, 17
    expected = (
        vocab * embedding
        + 2 * 4 * (embedding * hidden + hidden * hidden + 2 * hidden)  # one LSTM per direction
        + (2 * hidden * hidden + hidden)  # Linear(2h -> h)
        + (hidden * tags + tags)  # Linear(h -> tags)
    )
    assert body["parameters"] == expected


def test_estimate_of_a_bad_recipe_is_422(client, alice):
    recipe = dense_lm("lstm", 1)
    recipe["model"]["hidden_size"] = 0
    response = client.post("/v1/estimate", headers=alice, json={"recipe": recipe})
    assert response.status_code == 422
    assert response.json() == error(
        "invalid_recipe", "Input should be greater than or equal to 1", "recipe.model.hidden_size"
    )


def test_estimate_rejects_an_invalid_vocab_size(client, alice):
    response = client.post("/v1/estimate", headers=alice, json={"recipe": dense_lm("lstm", 1), "vocab_size": 1})
    assert response.status_code == 422
    assert response.json() == error("invalid_request", "Input should be greater than or equal to 2", "vocab_size")


def test_an_unknown_route_is_404_in_the_error_shape(client):
    response = client.get("/v1/nothing-here")
    assert response.status_code == 404
    assert response.json() == error("not_found", "Not Found", None)


def test_a_wrong_method_is_405_in_the_error_shape(client, alice):
    response = client.put("/v1/files", headers=alice)
    assert response.status_code == 405
    assert "allow" in response.headers  # the handler keeps the HTTPException's headers
    assert response.json() == error("method_not_allowed", "Method Not Allowed", None)


def test_a_huge_model_is_estimated_from_shapes_without_allocating_it(client, alice):
    """A 4096-unit, 100k-word model (~1.3 GB of float32 weights) is estimated without the process growing by that."""
    recipe = {
        "task": {"type": "language_model", "max_vocab": 100_000},
        "model": {"embedding_size": 1024, "hidden_size": 4096, "num_layers": 2},
        "method": {"type": "dense"},
    }
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    response = client.post("/v1/estimate", headers=alice, json={"recipe": recipe})
    peak_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    assert response.status_code == 200
    parameters = closed_form(100_000, 1024, 4096, 2, 4)
    assert response.json()["parameters"] == parameters
    assert peak_after - peak_before < parameters * 4 / 4


FROZEN_ESTIMATE = """
import gc, json, sys
from fastapi.testclient import TestClient
from service.app import create_served_app
from service.auth import create_key
from service.db import session_scope
from service.migrate import upgrade
from service.settings import get_settings

settings = get_settings()
upgrade(settings.resolved_database_url)
app = create_served_app()
with session_scope(app.state.sessions) as session:
    _, key = create_key(session, owner="alice", name="alice", secret=settings.secret_key)
with TestClient(app) as client:
    before = len(gc.get_objects())
    headers = {"Authorization": f"Bearer {key}"}
    refused = client.post("/v1/estimate", headers=headers, json={"recipe": {"task": {"type": "no_such_task"}}})
    assert refused.status_code == 422, refused.text  # a refused first estimate must freeze what it imported too
    gc.collect()
    after_refused = len(gc.get_objects())
    response = client.post("/v1/estimate", headers=headers, json={"recipe": json.loads(sys.argv[1])})
    assert response.status_code == 200, response.text
    gc.collect()
    counts = {"before": before, "after_refused": after_refused, "after": len(gc.get_objects())}
    print(json.dumps(counts | {"torch": "torch" in sys.modules}))
"""


def test_the_first_estimate_leaves_torch_out_of_the_collectors_sight_in_a_served_process(tmp_path):
    """create_served_app freezes the startup objects so that full collections stay short (the GET p99). The first
    estimate imports torch; its objects must be frozen too, or each full collection scans them again (~40 ms)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPARSEQ_")} | {"SPARSEQ_DATA_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", FROZEN_ESTIMATE, json.dumps(dense_lm("lstm", 1))],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    counts = json.loads(result.stdout.strip().splitlines()[-1])
    assert counts["torch"]  # the estimate did import it
    # Tracked objects: what a full collection scans. torch alone brings ~140k; requests leave a few thousand.
    assert counts["after_refused"] - counts["before"] < 20_000, counts
    assert counts["after"] - counts["before"] < 20_000, counts
