"""What a task is, as the rest of sparseq sees it: one :class:`TaskDefinition` per recipe ``task.type``.

A definition is torch-free (the API process reads it to validate recipes and uploads); what it builds when a job runs
(the adapter that feeds data and scores a model, the model itself) is imported only when those builders are called.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:  # the recipe and torch types, for the builders' signatures only
    import torch
    from torch import nn

    from compress.spec import Recipe

# Upper bounds of every size: generous (several times the largest models of the papers: 4096 hidden units, PTB's
# 10k vocabulary, sequences of 1000) but finite, so that an absurd recipe (hidden_size 10^30) is refused by the schema
# before anything is estimated or allocated. What a job may cost is the service's admission limits, not these.
MAX_WIDTH = 65_536  # hidden and embedding sizes
MAX_COMPONENTS = 256  # predefined recurrent components (the papers use a few to a few dozen)
MAX_BLOCKS = 1024  # predefined embedding blocks
MAX_VOCAB = 1_000_000
MAX_SEQUENCE = 100_000  # sequence_length, bptt
MAX_STEPS_PER_EPOCH = 1_000_000


class RecipeError(ValueError):
    """A recipe that is incoherent as a whole (its fields are each valid), naming the field it is about: raised by the
    recipe's validators and by a task's ``check``, it reaches users as that field (``param: recipe.<field>``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _tag_is_required(schema: dict[str, Any], cls: type) -> None:
    """A section chosen by its ``type`` (a task, a method) cannot be given without it, default or not: the recipe's
    unions are discriminated by that tag, so the schema requires it too."""
    if "type" in schema.get("properties", {}) and "type" not in schema.get("required", []):
        schema["required"] = ["type", *schema.get("required", [])]


class StrictModel(BaseModel):
    """Every recipe section forbids unknown fields (a typo is an error naming the field) and is immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_tag_is_required)


@dataclass(frozen=True)
class Role:
    """A data file a task takes: the upload purpose it must have, and whether a job needs it."""

    purpose: str
    required: bool = False
    description: str = ""


@dataclass(frozen=True)
class Metric:
    """The number a job is judged by (its evaluation's key) and which way is better."""

    name: str
    lower_is_better: bool
    description: str = ""


@dataclass(frozen=True)
class Purpose:
    """An upload purpose: its validator reads the file with bounded memory and returns a compress.data.Validation."""

    name: str
    validate: Callable[[str | Path], Any]
    description: str = ""


@dataclass(frozen=True)
class TaskDefinition:
    """Everything about one task. ``spec`` is the recipe's ``task`` section (a pydantic model whose ``type`` field is
    a ``Literal`` of ``type``); the builders are called by the pipeline, the estimate and the export."""

    type: str
    spec: type[StrictModel]
    description: str
    metric: Metric
    roles: Mapping[str, Role]
    build_adapter: Callable[[Recipe, Mapping[str, Any], torch.device], Any]
    build_model: Callable[[Recipe, Mapping[str, int]], nn.Module]
    # the number of time steps one training example has (the estimate's memory and FLOPs per step)
    sequence_length: Callable[[Recipe], int]
    purposes: tuple[Purpose, ...] = ()  # upload purposes this task introduces
    can_tie_weights: bool = False  # model.tie_weights allowed (the decoder shares the embedding)
    text: bool = False  # words in (embedding_size required, vocabularies apply), else real-valued inputs
    # sizes the data decides that the model needs (vocab_size, num_tags): the weight contract asks the files for them
    data_sizes: tuple[str, ...] = ()
    output_width: Callable[[Recipe, Mapping[str, int]], int] = lambda recipe, sizes: 0  # per-step logits held
    check: Callable[[Recipe], None] = lambda recipe: None  # task-specific coherence: raise ValueError
    # ONNX export: (module to trace, example inputs, input names, output name, dynamic axes) for the model
    onnx_inputs: Callable[[Any, Mapping[str, Any]], tuple] | None = None
    # random inputs of the task's shape for one call of the model, (model, batch, steps, generator) -> tuple of
    # tensors: the job's speed measurement times the model on them (None: the job measures no speed)
    sample_inputs: Callable[[Any, int, int, Any], tuple] | None = None

    def __post_init__(self) -> None:
        declared = self.spec.model_fields.get("type")
        if declared is None or declared.default != self.type:
            raise ValueError(f"task {self.type!r}: its spec {self.spec.__name__} needs type: Literal[{self.type!r}]")
        required = [name for name, role in self.roles.items() if role.required]
        if list(self.roles)[: len(required)] != required:
            raise ValueError(f"task {self.type!r}: list the required roles first")

    def describe(self) -> dict[str, Any]:
        """The task as the API serves it (GET /v1/tasks)."""
        return {
            "type": self.type,
            "description": self.description,
            "metric": {"name": self.metric.name, "lower_is_better": self.metric.lower_is_better},
            "roles": {
                name: {"purpose": role.purpose, "required": role.required, "description": role.description}
                for name, role in self.roles.items()
            },
            "text": self.text,
        }
