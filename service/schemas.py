"""What the API returns and accepts. Every object has an ``object`` field; times are Unix seconds."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from compress import tasks

T = TypeVar("T")


def unix(moment: datetime | None) -> int | None:
    return int(moment.timestamp()) if moment is not None else None


# -- enums: named, so that the document has one component for each and a generated client one enum type ----------------
# (tests/service/test_openapi.py checks each against the values the service and the worker actually write)


class JobStatus(StrEnum):
    """validating -> queued -> running -> succeeded | failed | cancelled (cancelling while a running job stops)."""

    validating = "validating"
    queued = "queued"
    running = "running"
    cancelling = "cancelling"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


# What a file is for, which decides how it is validated: the registered tasks' purposes, then weights and vocabulary
# (compress.tasks.purposes()). The document lists the built-in tasks' purposes.
FilePurpose = StrEnum("FilePurpose", {name: name for name in tasks.purposes()})
FilePurpose.__doc__ = "What a file is for, which decides how it is validated."


class FileStatus(StrEnum):
    """processed: the file passed validation for its purpose; error: it did not (status_details says why)."""

    processed = "processed"
    error = "error"


class ArtifactKind(StrEnum):
    """checkpoint: the sparse model (safetensors); report: report.json (a sweep's summary.json and summary.csv); plot:
    a PNG; file: any other output."""

    checkpoint = "checkpoint"
    report = "report"
    plot = "plot"
    export = "export"  # model.dense.safetensors, model.onnx: the dense equivalent for other runtimes
    file = "file"


# The recipe is validated by the service itself (service.jobs.parse_recipe), to answer in the one error shape with
# code invalid_recipe and the field at fault; so the field is a plain dict to pydantic, and the document refers to the
# Recipe component that service.openapi adds from compress.spec (pydantic cannot emit a reference to a schema it does
# not generate itself).
RECIPE_COMPONENT = "Recipe"
RecipeBody = Annotated[
    dict[str, Any],
    WithJsonSchema({"type": "object", "x-sparseq-component": RECIPE_COMPONENT}),
]
# A sweep's base recipe: each combination (the base with one cell's overrides) is a Recipe and is validated as one,
# but the base alone need not be (every cell may set what the base leaves out or gets wrong), so its schema is an
# object, not the Recipe.
BaseRecipeBody = Annotated[
    dict[str, Any],
    WithJsonSchema(
        {
            "type": "object",
            "description": "the base recipe (the Recipe's shape); each combination of it with a cell's overrides must "
            "be a valid Recipe, the base alone need not be",
        }
    ),
]


class ErrorDetail(BaseModel):
    code: str = Field(..., description="stable and machine-readable, e.g. not_found, invalid_recipe, rate_limited")
    message: str = Field(..., description="one line for people")
    param: str | None = Field(..., description="the parameter or field at fault, e.g. recipe.model.hidden_size")


class ErrorResponse(BaseModel):
    """Every error the API answers with, whatever the status."""

    error: ErrorDetail


class FileObject(BaseModel):
    object: Literal["file"] = "file"
    id: str
    purpose: FilePurpose
    filename: str
    bytes: int
    sha256: str
    status: FileStatus
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
    status: JobStatus
    recipe: RecipeBody = Field(..., description="the recipe as validated, with every default filled in")
    files: dict[str, str]
    progress: float
    metrics: dict[str, Any]
    error: JobError | None = None
    warnings: list[JobWarning] = Field(default_factory=list)
    live: JobLive | None = None
    attempts: int
    worker: str | None = Field(None, description="hostname/pid of the worker that ran the job (its last attempt)")
    device: str | None = Field(None, description="the device it ran on: 'cuda:N' (the host's GPU N) or 'cpu'")
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
    job_id: str | None = Field(None, description="the job that produced it; null for a sweep's artifact")
    sweep_id: str | None = Field(
        None, description="the sweep it summarises (summary.json, summary.csv, pareto.png); null for a job's artifact"
    )
    kind: ArtifactKind
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


# One named list per resource (a generated client gets FileList, not ListObject_FileObject_).
class FileList(ListObject[FileObject]):
    """A page of files, newest first: pass ``last_id`` as ``after`` for the next one."""


class JobList(ListObject[JobObject]):
    """A page of jobs, newest first: pass ``last_id`` as ``after`` for the next one."""


class EventList(ListObject[EventObject]):
    """A page of a job's events, newest first: pass ``last_id`` as ``after`` for the next one."""


class ArtifactList(ListObject[ArtifactObject]):
    """Every artifact of a job or a sweep, in the order they were stored (one page)."""


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    recipe: RecipeBody = Field(
        ..., description="a job recipe: its JSON Schema is served at GET /v1/schemas/recipe (compress.spec.Recipe)"
    )
    files: dict[str, str] = Field(
        default_factory=dict,
        description="data role -> file id: 'train' and 'valid' for text tasks (and 'vocabulary': the token order "
        "of your own weights), 'train' (trajectories) for navigation",
    )


class EstimateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    recipe: RecipeBody
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


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ready", "unavailable"]
    checks: dict[str, bool] = Field(..., description="each dependency and whether it answered: database, broker")


class RecipeSchema(BaseModel):
    """A JSON Schema (draft 2020-12) document: the one the Recipe component of this document is made from, with its
    definitions under ``$defs``."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    title: str
    type: Literal["object"]
    properties: dict[str, Any]
    required: list[str]
    defs: dict[str, Any] = Field(..., alias="$defs")


class TaskMetric(BaseModel):
    name: str = Field(..., description="the evaluation's key a job is judged by, e.g. valid_perplexity")
    lower_is_better: bool


class TaskRole(BaseModel):
    purpose: str = Field(..., description="the purpose a file needs to fill this role")
    required: bool
    description: str


class TaskObject(BaseModel):
    """A task a recipe can name (``task.type``): what it is judged by and the files it takes (``files`` of a job)."""

    object: Literal["task"] = "task"
    type: str
    description: str
    metric: TaskMetric
    roles: dict[str, TaskRole]
    text: bool = Field(..., description="words in: model.embedding_size is required and a vocabulary applies")


class TaskList(BaseModel):
    object: Literal["list"] = "list"
    data: list[TaskObject]
    purposes: list[str] = Field(..., description="every upload purpose (POST /v1/files' purpose field)")


class SweepStatus(StrEnum):
    """running (children queued, running or held) -> succeeded (every child did) | failed (some did not) | cancelled."""

    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


class SweepCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    recipe: BaseRecipeBody = Field(..., description="the base recipe, the shape POST /v1/jobs takes")
    grid: dict[str, list[Any]] = Field(
        default_factory=dict, description="dotted recipe path -> values; every combination (cartesian product) runs"
    )
    overrides: list[dict[str, Any]] = Field(
        default_factory=list, description="dotted recipe path -> value, one combination each (crossed with the grid)"
    )
    files: dict[str, str] = Field(default_factory=dict, description="data role -> file id, shared by every job")
    max_parallel: int = Field(4, ge=1, le=64, description="children queued or running at once; the rest are held")


class SweepCell(BaseModel):
    model_config = ConfigDict(extra="allow")

    overrides: dict[str, Any] = Field(..., description="the combination without training.seed")
    jobs: list[str]
    n: int = Field(..., description="succeeded seeds the figures are over")
    metric: str | None = None
    value_mean: float | None = None
    value_std: float | None = Field(None, description="sample standard deviation (n - 1); null with one seed")


class SweepSummary(BaseModel):
    std: str
    cells: list[SweepCell]


class SweepObject(BaseModel):
    object: Literal["sweep"] = "sweep"
    id: str
    status: SweepStatus
    recipe: BaseRecipeBody
    files: dict[str, str]
    max_parallel: int
    combinations: int
    progress: dict[str, int] = Field(..., description="children by status, and 'held': combinations not started")
    jobs: list[str]
    summary: SweepSummary | None = None
    created_at: int
    finished_at: int | None = None


class SweepList(ListObject[SweepObject]):
    """A page of sweeps, newest first: pass ``last_id`` as ``after`` for the next one."""
