"""What the API returns and accepts. Every object has an ``object`` field; times are Unix seconds."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")


def unix(moment: datetime | None) -> int | None:
    return int(moment.timestamp()) if moment is not None else None


class FileObject(BaseModel):
    object: Literal["file"] = "file"
    id: str
    purpose: str
    filename: str
    bytes: int
    sha256: str
    status: Literal["processed", "error"]
    status_details: str | None = None
    stats: dict[str, Any] = Field(default_factory=dict)
    created_at: int


class JobError(BaseModel):
    code: str
    message: str


class JobWarning(BaseModel):
    code: str = Field(..., description="e.g. tensor_at_floor, tensor_pruned_away, worse_than_reference")
    message: str
    tensor: str | None = Field(None, description="the parameter the warning is about, where there is one")


class JobLive(BaseModel):
    """The latest progress report of a running job (also the last one of a finished job)."""

    model_config = ConfigDict(extra="allow")

    phase: str = Field(..., description="reference, train, prune, fine_tune, lottery or a baseline's name")
    step: int
    total_steps: int
    loss: float | None = None
    metric: str | None = Field(None, description="the task's metric name, e.g. valid_perplexity")
    value: float | None = Field(None, description="its latest evaluated value")
    sparsity: float | None = None
    eta_s: float | None = Field(None, description="seconds the whole job still needs, estimated")
    updated_at: int | None = None


class JobObject(BaseModel):
    object: Literal["job"] = "job"
    id: str
    status: str
    recipe: dict[str, Any]
    files: dict[str, str]
    progress: float
    metrics: dict[str, Any]
    error: JobError | None = None
    warnings: list[JobWarning] = Field(default_factory=list)
    live: JobLive | None = None
    attempts: int
    created_at: int
    started_at: int | None = None
    finished_at: int | None = None


class EventObject(BaseModel):
    object: Literal["job.event"] = "job.event"
    id: str
    created_at: int
    level: str
    type: Literal["message", "metrics", "progress"]
    message: str
    data: dict[str, Any] = Field(default_factory=dict)


class ArtifactObject(BaseModel):
    object: Literal["artifact"] = "artifact"
    id: str
    job_id: str
    kind: str
    filename: str
    bytes: int
    sha256: str
    created_at: int


class ListObject(BaseModel, Generic[T]):
    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    recipe: dict[str, Any] = Field(
        ..., description="a job recipe: its JSON Schema is served at GET /v1/schemas/recipe (compress.spec.Recipe)"
    )
    files: dict[str, str] = Field(
        default_factory=dict,
        description="data role -> file id: 'train' and 'valid' for text tasks (and 'vocabulary': the token order "
        "of your own weights), 'train' (trajectories) for navigation",
    )


class EstimateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    recipe: dict[str, Any]
    vocab_size: int | None = Field(None, ge=2, description="text tasks: defaults to the recipe's max_vocab")
    num_tags: int | None = Field(None, ge=1, description="sequence tagging: defaults to 45 (the Penn Treebank tag set)")


class WeightShape(BaseModel):
    name: str
    shape: list[int]


class Estimate(BaseModel):
    object: Literal["estimate"] = "estimate"
    parameters: int
    nonzero_parameters: int
    checkpoint_bytes: int
    dense_checkpoint_bytes: int
    flops_per_token: int
    flops_per_step: int
    training_memory_bytes: int
    training_runs: int = Field(..., description="trainings the job runs: main, reference, baselines, lottery check")
    weights: list[WeightShape] = Field(..., description="the weight contract: what an init_from file must hold")


class DeletedObject(BaseModel):
    id: str
    object: str
    deleted: bool = True
