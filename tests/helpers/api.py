"""Plain factory functions shared by the service tests: uploads, recipes, jobs, and a look into the broker."""

from __future__ import annotations

import base64
import copy
import io
import json
from typing import Any

import numpy as np

from service.tables import Artifact

LIMIT = 256 * 1024  # max_upload_bytes of the test app: big enough for the PTB slice, small enough to overflow cheaply


def new_key(app, owner: str, name: str = "test") -> str:
    """A fresh API key for ``owner``, made the way ``sparseqd create-key`` makes one; returns the plain key."""
    from service.auth import create_key

    with app.state.sessions() as session:
        _, plain = create_key(session, owner=owner, name=name, secret=app.state.settings.secret_key)
        session.commit()
    return plain


def error(code: str, message: str, param: str | None) -> dict[str, Any]:
    """The one error envelope every failure must use."""
    return {"error": {"code": code, "message": message, "param": param}}


def upload(client, headers: dict[str, str], content: bytes, *, purpose: str = "lm_text", filename: str = "data.txt"):
    return client.post("/v1/files", headers=headers, files={"file": (filename, content)}, data={"purpose": purpose})


def upload_ok(client, headers: dict[str, str], content: bytes, **kwargs) -> dict[str, Any]:
    response = upload(client, headers, content, **kwargs)
    assert response.status_code == 201, response.text
    return response.json()


def multipart(parts: list[tuple[str, str | None, bytes]], boundary: str = "sparseq-test-boundary") -> tuple[bytes, str]:
    """A hand-built multipart/form-data body: (name, filename or None, value) parts -> (body, content type)."""
    body = io.BytesIO()
    for name, filename, value in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        body.write(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode())
        body.write(value + b"\r\n")
    body.write(f"--{boundary}--\r\n".encode())
    return body.getvalue(), f"multipart/form-data; boundary={boundary}"


def chunked(body: bytes, size: int = 8192):
    """A generator body: httpx sends it with Transfer-Encoding: chunked and no Content-Length."""

    def chunks():
        for start in range(0, len(body), size):
            yield body[start : start + size]

    return chunks()


def trajectories_npz(*, trajectories: int = 3, steps: int = 6, escape: bool = False) -> bytes:
    rng = np.random.default_rng(0)
    start = rng.uniform(-0.5, 0.5, size=(trajectories, 2))
    velocity = rng.normal(0, 0.001, size=(trajectories, steps, 2))  # metres a step
    position = start[:, None, :] + np.cumsum(velocity, axis=1)
    if escape:
        position[1, 3, 0] = 1.5  # outside the 2.2 m box
    buffer = io.BytesIO()
    np.savez(buffer, velocity=velocity, position=position, start=start)
    return buffer.getvalue()


def weights_safetensors() -> bytes:
    import torch
    from safetensors.torch import save

    return save({"rnn.weight_hh_l0": torch.randn(8, 2), "decoder.bias": torch.zeros(5)})


def lm_recipe(**changes: Any) -> dict[str, Any]:
    recipe = {
        "task": {"type": "language_model", "max_vocab": 500},
        "model": {"embedding_size": 16, "hidden_size": 16},
        "method": {"type": "predefined", "recurrent": {"components": 4, "input_density": 0.5}},
        "training": {"epochs": 1, "batch_size": 4, "bptt": 10},
    }
    for path, value in changes.items():
        set_path(recipe, path, value)
    return recipe


def tagging_recipe() -> dict[str, Any]:
    return {
        "task": {"type": "sequence_tagging"},
        "model": {"embedding_size": 8, "hidden_size": 8, "bidirectional": True},
        "method": {"type": "dense"},
    }


def set_path(document: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """set_path(recipe, "model.hidden_size", 0): a nested change by dotted path (``__`` also separates)."""
    keys = dotted.replace("__", ".").split(".")
    target = document
    for key in keys[:-1]:
        target = target.setdefault(key, {})
    target[keys[-1]] = value
    return document


def changed(recipe: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    return set_path(copy.deepcopy(recipe), dotted, value)


def create_job(client, headers: dict[str, str], train_id: str, *, recipe: dict | None = None, key: str | None = None):
    extra = {"Idempotency-Key": key} if key is not None else {}
    body = {"recipe": recipe or lm_recipe(), "files": {"train": train_id}}
    return client.post("/v1/jobs", headers={**headers, **extra}, json=body)


def create_job_ok(client, headers: dict[str, str], train_id: str, **kwargs) -> dict[str, Any]:
    response = create_job(client, headers, train_id, **kwargs)
    assert response.status_code == 201, response.text
    return response.json()


def broker_messages(server) -> list[dict[str, Any]]:
    """The Celery messages waiting on the 'jobs' list: task name and positional args, decoded from the raw payload."""
    messages = []
    for raw in server.lrange("jobs", 0, -1):
        envelope = json.loads(raw)
        body = envelope["body"]
        if envelope["properties"].get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args, kwargs, _ = json.loads(body)
        messages.append({"task": envelope["headers"]["task"], "args": args, "kwargs": kwargs})
    return messages


SECRET = "test-secret-that-is-long-enough-0123456789"


def add_artifact(sessions, store, job_id: str, owner: str, data: bytes, filename: str = "model.safetensors") -> str:
    sha, size = store.put_chunks([data])
    with sessions() as session:
        artifact = Artifact(job_id=job_id, owner=owner, kind="checkpoint", filename=filename, bytes=size, sha256=sha)
        session.add(artifact)
        session.commit()
        return artifact.id
