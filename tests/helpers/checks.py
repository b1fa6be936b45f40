"""Checks of a finished job's outputs, loaded with the library (imports torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

import compress
from compress.predefined import SparseLSTM
from tests.helpers.processes import Api


def checkpoint_of(api: Api, job: dict[str, Any], directory: Path):
    """The job's artifacts (each stored once), its checkpoint downloaded, verified and loaded."""
    artifacts = api.artifacts(job["id"])
    names = sorted(a["filename"] for a in artifacts)
    assert len(names) == len(set(names)), f"an artifact is stored twice: {names}"
    assert {"model.safetensors", "report.json"} <= set(names)
    (checkpoint,) = [a for a in artifacts if a["kind"] == "checkpoint"]
    assert checkpoint["job_id"] == job["id"] and checkpoint["object"] == "artifact"
    return compress.load_checkpoint(api.download(checkpoint, directory / checkpoint["filename"]))


def assert_ran_through(api: Api, job: dict[str, Any], metric: str) -> None:
    """Succeeded on its first attempt, progress to 1.0, and its events tell the story in order."""
    assert job["status"] == "succeeded", job
    assert job["progress"] == 1.0
    assert job["attempts"] == 1
    assert job["error"] is None
    assert job["started_at"] is not None and job["finished_at"] >= job["started_at"] >= job["created_at"]
    events = api.events(job["id"])
    messages = [e["message"] for e in events]
    assert messages[0] == "job queued" and "job started" in messages and messages[-1] == "job succeeded"
    main_run = ("train", "prune", "fine_tune")  # the method's phases (not the reference's or a baseline's)
    epochs = [
        e
        for e in events
        if e["type"] == "metrics" and e["data"].get("epoch_end") and e["data"].get("phase") in main_run
    ]
    assert [e["data"]["epoch"] for e in epochs] == list(range(1, job["recipe"]["training"]["epochs"] + 1))
    assert epochs[-1]["data"][metric] == job["metrics"][metric]  # the last epoch's evaluation is the job's result


def check_language_model_job(api: Api, job: dict[str, Any], directory: Path) -> None:
    """LM_RECIPE's job: ran through, its checkpoint is the predefined-sparse LSTM the recipe asks for, and the
    metrics in the checkpoint's manifest are the ones the API reported."""
    assert_ran_through(api, job, "valid_perplexity")

    model, manifest = checkpoint_of(api, job, directory)
    assert manifest["metrics"]["valid_perplexity"] == job["metrics"]["valid_perplexity"]
    assert manifest["metrics"] == {k: v for k, v in job["metrics"].items() if k in manifest["metrics"]}
    assert manifest["recipe"] == job["recipe"]

    # The recurrent layer is the predefined-sparse LSTM with the recipe's k, and what it stores is what k and the
    # input density say: k blocks of (H/k)^2 per gate recurrently, a window of delta*E inputs per component.
    hidden, embedding, k, density = 24, 16, 2, 0.5
    assert isinstance(model.rnn, SparseLSTM)
    assert model.rnn.components == [k]
    weights = dict(model.rnn.named_parameters())
    recurrent = sum(w.numel() for name, w in weights.items() if name.startswith("weight_hh"))
    inputs = sum(w.numel() for name, w in weights.items() if name.startswith("weight_ih"))
    assert recurrent == 4 * hidden * hidden // k
    assert inputs == int(4 * hidden * embedding * density)

    # The loaded model is usable: a forward pass over the vocabulary it was trained with.
    assert len(manifest["vocabulary"]) == manifest["sizes"]["vocab_size"] <= 300
    logits, _ = model(torch.randint(0, manifest["sizes"]["vocab_size"], (5, 2)))
    assert logits.shape == (5, 2, manifest["sizes"]["vocab_size"]) and torch.isfinite(logits).all()
