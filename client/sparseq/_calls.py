"""Every API call the SDK makes, described once (path, body, retry rule) for both clients."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from sparseq._base import CREATE_RETRY, UPLOAD_RETRY, Call, segment


def idempotency(key: str | None) -> dict[str, str]:
    """One key for every attempt of a creation: the service answers a replay with the object it already made."""
    return {"Idempotency-Key": key or f"sdk-{uuid.uuid4()}"}


def upload(path: str | Path, purpose: str, filename: str | None) -> Call:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no file {path}")
    name = filename or path.name

    def open_files() -> dict[str, Any]:
        return {"file": (name, open(path, "rb"), "application/octet-stream")}

    return Call(
        "POST",
        "/v1/files",
        data={"purpose": purpose},
        open_files=open_files,
        retry_statuses=UPLOAD_RETRY,
        retry_connection=False,
    )


def file(file_id: str) -> Call:
    return Call("GET", f"/v1/files/{segment(file_id)}")


def delete_file(file_id: str) -> Call:
    return Call("DELETE", f"/v1/files/{segment(file_id)}", retry_statuses=frozenset(), retry_connection=False)


def create_job(recipe: dict[str, Any], files: dict[str, str] | None, key: str | None) -> Call:
    body = {"recipe": recipe, "files": files or {}}
    return Call("POST", "/v1/jobs", json=body, headers=idempotency(key), retry_statuses=CREATE_RETRY)


def job(job_id: str) -> Call:
    return Call("GET", f"/v1/jobs/{segment(job_id)}")


def cancel_job(job_id: str) -> Call:  # cancelling twice is cancelling once
    return Call("POST", f"/v1/jobs/{segment(job_id)}/cancel")


def job_artifacts(job_id: str) -> Call:
    return Call("GET", f"/v1/jobs/{segment(job_id)}/artifacts")


def artifact(artifact_id: str) -> Call:
    return Call("GET", f"/v1/artifacts/{segment(artifact_id)}")


def create_sweep(body: dict[str, Any], key: str | None) -> Call:
    body = {k: v for k, v in body.items() if v is not None}
    return Call("POST", "/v1/sweeps", json=body, headers=idempotency(key), retry_statuses=CREATE_RETRY)


def sweep(sweep_id: str) -> Call:
    return Call("GET", f"/v1/sweeps/{segment(sweep_id)}")


def cancel_sweep(sweep_id: str) -> Call:
    return Call("POST", f"/v1/sweeps/{segment(sweep_id)}/cancel")


def sweep_artifacts(sweep_id: str) -> Call:
    return Call("GET", f"/v1/sweeps/{segment(sweep_id)}/artifacts")


def estimate(recipe: dict[str, Any], vocab_size: int | None, num_tags: int | None) -> Call:
    body = {"recipe": recipe, "vocab_size": vocab_size, "num_tags": num_tags}
    return Call("POST", "/v1/estimate", json={k: v for k, v in body.items() if v is not None})


def tasks() -> Call:
    return Call("GET", "/v1/tasks")


def recipe_schema() -> Call:
    return Call("GET", "/v1/schemas/recipe")


def page(path: str, after: str | None, limit: int, **params: Any) -> Call:
    return Call("GET", path, params={"after": after, "limit": limit, **params})


def content(path: str) -> str:
    return f"{path}/content"
