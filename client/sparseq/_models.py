"""The API's objects as typed models. They tolerate fields this version does not know (a newer service may add
some: they are kept, readable as attributes and in ``model_dump()``), so an SDK keeps working against a newer API."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

TERMINAL = ("succeeded", "failed", "cancelled")


class SparseqObject(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=(), populate_by_name=True)

    def to_dict(self) -> dict[str, Any]:
        """The object as JSON-ready data, unknown fields included."""
        return self.model_dump(mode="json")


class FileObject(SparseqObject):
    object: str = "file"
    id: str
    purpose: str
    filename: str
    bytes: int
    sha256: str
    status: str
    status_details: str | None = None
    stats: dict[str, Any] = Field(default_factory=dict)
    created_at: int


class JobError(SparseqObject):
    code: str
    message: str


class JobWarning(SparseqObject):
    code: str
    message: str
    tensor: str | None = None


class JobLive(SparseqObject):
    """What a running job is doing: its phase (reference, train, prune, fine_tune...), step, loss, metric, ETA."""

    phase: str
    step: int
    total_steps: int
    loss: float | None = None
    metric: str | None = None
    value: float | None = None
    sparsity: float | None = None
    eta_s: float | None = None
    updated_at: int | None = None


class Job(SparseqObject):
    object: str = "job"
    id: str
    status: str
    recipe: dict[str, Any]
    files: dict[str, str] = Field(default_factory=dict)
    progress: float = 0.0
    metrics: dict[str, Any] = Field(default_factory=dict)
    error: JobError | None = None
    warnings: list[JobWarning] = Field(default_factory=list)
    live: JobLive | None = None
    attempts: int = 0
    worker: str | None = None
    device: str | None = None
    created_at: int
    started_at: int | None = None
    finished_at: int | None = None

    @property
    def done(self) -> bool:
        """Succeeded, failed or cancelled: nothing about it changes any more."""
        return self.status in TERMINAL


class Event(SparseqObject):
    object: str = "event"
    id: str
    created_at: int
    level: str
    type: str
    message: str
    data: dict[str, Any] = Field(default_factory=dict)


class Artifact(SparseqObject):
    object: str = "artifact"
    id: str
    job_id: str | None = None
    sweep_id: str | None = None
    kind: str
    filename: str
    bytes: int
    sha256: str
    created_at: int


class SweepCell(SparseqObject):
    """One combination of a sweep's grid over its seeds: the metric's mean and (sample) std."""

    overrides: dict[str, Any]
    jobs: list[str]
    n: int
    metric: str | None = None
    value_mean: float | None = None
    value_std: float | None = None


class SweepSummary(SparseqObject):
    std: str
    cells: list[SweepCell]


class Sweep(SparseqObject):
    object: str = "sweep"
    id: str
    status: str
    recipe: dict[str, Any]
    files: dict[str, str] = Field(default_factory=dict)
    max_parallel: int
    combinations: int
    progress: dict[str, int] = Field(default_factory=dict)
    jobs: list[str] = Field(default_factory=list)
    summary: SweepSummary | None = None
    created_at: int
    finished_at: int | None = None

    @property
    def done(self) -> bool:
        return self.status != "running"


class WeightShape(SparseqObject):
    name: str
    shape: list[int]


class Estimate(SparseqObject):
    object: str = "estimate"
    parameters: int
    nonzero_parameters: int
    checkpoint_bytes: int
    dense_checkpoint_bytes: int
    flops_per_token: int
    flops_per_step: int
    training_memory_bytes: int
    training_runs: int
    weights: list[WeightShape] = Field(default_factory=list)


class TaskMetric(SparseqObject):
    name: str
    lower_is_better: bool


class TaskRole(SparseqObject):
    purpose: str
    required: bool
    description: str


class Task(SparseqObject):
    object: str = "task"
    type: str
    description: str
    metric: TaskMetric
    roles: dict[str, TaskRole]
    text: bool


class TaskList(SparseqObject):
    object: str = "list"
    data: list[Task]
    purposes: list[str]


class Deleted(SparseqObject):
    id: str
    object: str
    deleted: bool = True
