"""The job recipe: the one contract the library, the service, the workers and the SDK share.

Pure pydantic (no torch import), so the API process can validate a recipe cheaply. Versioned: ``version: 1``.
Every model forbids unknown fields, so a typo (``"epoch": 3``) is an error naming the field, never silently ignored.
Combinations that cannot train (a bidirectional language model, k larger than the hidden size, a tied decoder whose
sizes differ...) are refused here, before any compute is spent.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any, Literal, Union

from pydantic import Field, model_validator

from compress import tasks
from compress.tasks.adding import AddingTask
from compress.tasks.base import (
    MAX_BLOCKS,
    MAX_COMPONENTS,
    MAX_SEQUENCE,
    MAX_STEPS_PER_EPOCH,
    MAX_VOCAB,
    MAX_WIDTH,
    RecipeError,
)
from compress.tasks.base import StrictModel as _Strict
from compress.tasks.language_model import LanguageModelTask
from compress.tasks.navigation import NavigationTask
from compress.tasks.sequence_tagging import SequenceTaggingTask

RECIPE_VERSION = 1

# The task sections (LanguageModelTask, NavigationTask, ...) are defined with their tasks in compress.tasks and
# re-exported here; the recipe's ``task`` field is the union of every registered task, rebuilt when one is added.
__all__ = [
    "MAX_BLOCKS",
    "MAX_COMPONENTS",
    "MAX_SEQUENCE",
    "MAX_STEPS_PER_EPOCH",
    "MAX_VOCAB",
    "MAX_WIDTH",
    "AddingTask",
    "LanguageModelTask",
    "NavigationTask",
    "SequenceTaggingTask",
]

Cell = Literal["lstm", "gru", "rnn_tanh", "rnn_relu"]
# Names shared with compress.moduli (a test checks they agree with its registries).
SpaceName = Literal["circle", "sphere", "s3", "torus", "torus6", "klein", "mixed"]
InhibitorName = Literal["dog", "diffusion", "gauss", "ripple", "linear", "standard", "none"]


def _task_union():
    specs = tuple(definition.spec for definition in tasks.definitions())
    return Annotated[Union[specs], Field(discriminator="type")]  # noqa: UP007 - a union built from a tuple


Task = _task_union()


def text_tasks() -> tuple[str, ...]:
    """The registered tasks whose inputs are words."""
    return tuple(definition.type for definition in tasks.definitions() if definition.text)


# -- model ------------------------------------------------------------------------------------------------------------


class ModelSpec(_Strict):
    cell: Cell = "lstm"
    embedding_size: int | None = Field(None, ge=1, le=MAX_WIDTH, description="word embedding size (text tasks only)")
    hidden_size: int = Field(..., ge=1, le=MAX_WIDTH)
    num_layers: int = Field(1, ge=1, le=8)
    bidirectional: bool = False
    dropout: float = Field(0.0, ge=0, lt=1)
    tie_weights: bool = Field(False, description="share the embedding with the output layer (language model)")


# -- methods ----------------------------------------------------------------------------------------------------------


class DenseBudget(_Strict):
    """Give the sparse layers the parameter count of a dense model whose hidden size is ``hidden_size / hidden_scale``;
    the planner picks k and delta per layer (Demeester et al., "Predefined Sparseness in Recurrent Sequence Models",
    CoNLL 2018: recurrent layers at a given parameter reduction)."""

    hidden_scale: float = Field(1.5, gt=1, le=16)


class PredefinedRecurrent(_Strict):
    # Each component is a module of its own, so building (even on the meta device, as the API's estimate does)
    # costs Python objects per component: 256 x 8 bidirectional layers take ~3 s to price, 1024 took 13 s.
    components: int | None = Field(None, ge=1, le=MAX_COMPONENTS)
    input_density: float | None = Field(None, gt=0, le=1)
    budget_of: DenseBudget | None = None

    @model_validator(mode="after")
    def _one_way(self) -> PredefinedRecurrent:
        explicit = self.components is not None
        if explicit == (self.budget_of is not None):
            raise ValueError("give either components (with input_density) or budget_of, not both and not neither")
        if self.budget_of is not None and self.input_density is not None:
            raise ValueError("input_density is chosen by the planner when budget_of is given")
        if explicit:
            density = 1.0 if self.input_density is None else self.input_density
            if density * self.components < 1 - 1e-9:
                raise ValueError(
                    f"input_density ({density}) must be at least 1/components (1/{self.components}): otherwise some "
                    "input features are read by no component"
                )
        return self


class PredefinedEmbedding(_Strict):
    blocks: int = Field(..., ge=1, le=MAX_BLOCKS)
    density: float = Field(..., gt=0, le=1)
    order: Literal["frequent_long", "rare_long", "random"] = "frequent_long"


class PredefinedMethod(_Strict):
    """Sparse from the first step: k small dense recurrent layers side by side, frequency-blocked embeddings."""

    type: Literal["predefined"] = "predefined"
    recurrent: PredefinedRecurrent | None = None
    embedding: PredefinedEmbedding | None = None

    @model_validator(mode="after")
    def _something_sparse(self) -> PredefinedMethod:
        if self.recurrent is None and self.embedding is None:
            raise ValueError("a predefined method needs recurrent, embedding, or both")
        return self


# The moduli paper's own pruning: one global magnitude threshold over every matrix, no floors. At small widths it
# prunes whole tensors (a navigation model's velocity input, a small LM's W_ih and W_hh): kept as a named preset.
PAPER_PRUNING = {"allocation": "global", "targets": "all", "floors": False, "min_density": 0.0}
# A job that starts from trained weights (init_from) needs no warm-up before pruning: it prunes on a cubic schedule
# (Zhu & Gupta, 2017: fast while weights are redundant, slowly near the target) from the first step and fine-tunes
# the second half. Chosen by benchmarks/default_quality.py: a user's LSTM at 90% kept 1.69x its own perplexity with
# these, 2.10x with the from-scratch schedule; from scratch the linear schedule stayed better (1.43 against 1.48x).
FROM_WEIGHTS_SCHEDULE = {"schedule": "cubic", "start_fraction": 0.0, "end_fraction": 0.5}


class PruningSettings(_Strict):
    """Gradual magnitude pruning. ``allocation`` decides how many weights each tensor keeps, ``targets`` which tensors
    are pruned, and this project's floors (``floors``: every output unit keeps its largest input and every input feature
    its largest output; ``min_density``: a share each tensor keeps) keep every tensor alive whatever the allocation.
    ``preset: paper`` fills in the moduli paper's settings (global, every matrix, no floors) for the fields you do not
    give."""

    target_sparsity: float = Field(0.9, ge=0, lt=1, description="share of the targeted tensors' weights set to zero")
    schedule: Literal["one_shot", "linear", "cubic"] = Field(
        "linear", description="how sparsity rises from start_fraction to end_fraction; jobs with init_from: cubic"
    )
    allocation: Literal["global", "uniform", "erk"] = Field(
        "uniform",  # chosen by benchmarks/default_quality.py (the table is in benchmarks/results/)
        description="global: one magnitude threshold over every targeted tensor (the paper's); uniform: each tensor to "
        "the target; erk: density proportional to (n_in + n_out) / (n_in * n_out), scaled to the target (RigL)",
    )
    targets: Literal["recurrent", "recurrent_and_input", "all"] = Field(
        "all", description="which weight matrices are pruned: W_hh only, W_hh and W_ih, or every matrix"
    )
    floors: bool = Field(
        True, description="every output unit keeps its largest input and every input feature its largest output"
    )
    min_density: float = Field(0.0, ge=0, le=1, description="each targeted tensor keeps at least this share")
    per_gate: bool = Field(True, description="uniform/erk: each gate block of a packed LSTM/GRU tensor on its own")
    preset: Literal["paper"] | None = Field(None, description="paper: global, every matrix, no floors")
    start_fraction: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="fraction of training before pruning starts (the paper starts after epoch 1); jobs with "
        "init_from: 0, with end_fraction 0.5, unless either is given",
    )
    end_fraction: float = Field(
        0.67, gt=0, le=1, description="fraction of training by which the target is reached; the rest fine-tunes"
    )

    @model_validator(mode="before")
    @classmethod
    def _preset_and_scope(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        scope = data.pop("scope", None)  # the older name (recipes stored before allocation existed)
        if scope is not None:
            if scope not in ("global", "tensor", "gate"):
                raise ValueError(f"scope must be 'global', 'tensor' or 'gate', got {scope!r}")
            data.setdefault("allocation", "global" if scope == "global" else "uniform")
            data.setdefault("per_gate", scope == "gate")
            data.setdefault("floors", False)  # what such a recipe meant when it was written
        if data.get("preset") == "paper":
            for key, value in PAPER_PRUNING.items():
                data.setdefault(key, value)
        return data

    @model_validator(mode="after")
    def _ordered(self) -> PruningSettings:
        if self.end_fraction <= self.start_fraction:
            raise ValueError("end_fraction must be greater than start_fraction")
        return self


class MagnitudePruningMethod(PruningSettings):
    """Gradual magnitude pruning with no regularizer: the baseline."""

    type: Literal["magnitude_pruning"] = "magnitude_pruning"


class ModuliPruningMethod(PruningSettings):
    """Neurons placed on a space, recurrent weights penalised by distance, then magnitude pruning."""

    type: Literal["moduli_pruning"] = "moduli_pruning"
    space: SpaceName = "torus"
    inhibitor: InhibitorName = "dog"
    invert: bool = True
    permute: bool = Field(False, description="control: shuffle the N^2 coefficients, destroying the geometry")
    strength: float = Field(0.1, ge=0, le=1e6, description="scale-free: the paper's lambda at its 4096 neurons")
    learned_geometry: bool = False
    lottery_check: bool = False


class DenseMethod(_Strict):
    """No compression: the reference."""

    type: Literal["dense"] = "dense"


Method = Annotated[
    PredefinedMethod | ModuliPruningMethod | MagnitudePruningMethod | DenseMethod,
    Field(discriminator="type"),
]


# -- training ---------------------------------------------------------------------------------------------------------


class TrainingSpec(_Strict):
    epochs: int = Field(1, ge=1, le=10_000)
    batch_size: int = Field(20, ge=1, le=65_536)
    bptt: int = Field(35, ge=1, le=MAX_SEQUENCE, description="truncated back-propagation length (language model)")
    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = Field(1e-3, gt=0, le=1e3)
    weight_decay: float = Field(0.0, ge=0, le=1e3)
    lr_schedule: Literal["constant", "plateau", "cosine"] = "constant"
    clip: float | None = Field(0.25, gt=0, le=1e6, description="gradient-norm clipping; null turns it off")
    seed: int = Field(0, ge=-(2**63), lt=2**64, description="what torch.manual_seed accepts")
    evaluations: int = Field(
        10, ge=1, le=1000, description="validation runs spread over training (every epoch's end is one too)"
    )
    time_budget_s: float | None = Field(
        None, gt=0, le=30 * 24 * 3600, description="stop training (and keep the result) after this long"
    )


Baseline = Literal["dense_same_params", "dense_full"]
Reference = Literal["auto", "dense", "dense_same_params", "none"]


class OutputSpec(_Strict):
    """What a job writes besides the sparse checkpoint, its report and plots (compress.outputs)."""

    export: list[Literal["dense_safetensors", "onnx"]] = Field(
        default_factory=list,
        description="model.dense.safetensors (plain PyTorch names) and/or model.onnx (the dense equivalent)",
    )
    value_dtype: Literal["float32", "float16", "bfloat16"] = Field(
        "float32", description="type of the checkpoint's stored values; the report measures the quality change"
    )
    measure_speed: bool = Field(True, description="time the runtime against the dense equivalent (speedup_* metrics)")

    @model_validator(mode="after")
    def _once_each(self) -> OutputSpec:
        if len(set(self.export)) != len(self.export):
            raise ValueError("export lists the same artifact twice")
        return self


class Recipe(_Strict):
    version: Literal[1] = RECIPE_VERSION
    task: Task
    model: ModelSpec
    method: Method
    training: TrainingSpec = TrainingSpec()
    baselines: list[Baseline] = Field(default_factory=list, max_length=2, json_schema_extra={"uniqueItems": True})
    reference: Reference = Field(
        "auto",
        description="what the result is judged against: auto = dense for pruning methods, dense_same_params for "
        "predefined, the uploaded weights themselves for jobs with init_from, nothing for the dense method; none skips "
        "it (the reference costs one more training run, see the estimate's training_runs)",
    )
    quality_tolerance: float = Field(
        1.25,
        gt=1,
        le=100,
        description="warn when the metric is worse than the reference by more than this factor (value / reference "
        "above it for lower-is-better metrics, below its inverse for higher-is-better ones)",
    )
    init_from: str | None = Field(
        None, max_length=64, description="dense safetensors weights to prune instead of training"
    )
    output: OutputSpec = OutputSpec()

    @model_validator(mode="before")
    @classmethod
    def _from_weights_schedule(cls, data: Any) -> Any:
        """A pruning job from trained weights gets :data:`FROM_WEIGHTS_SCHEDULE` for what its recipe leaves unsaid."""
        if not isinstance(data, dict) or data.get("init_from") is None:
            return data
        method = data.get("method")
        if isinstance(method, PruningSettings):
            given, method = method.model_fields_set, method.model_dump(exclude_unset=True) | {"type": method.type}
        elif isinstance(method, dict) and method.get("type") in ("magnitude_pruning", "moduli_pruning"):
            given = set(method)
        else:
            return data
        if method.get("preset") is not None:
            return data
        method = dict(method)
        if "schedule" not in given:
            method["schedule"] = FROM_WEIGHTS_SCHEDULE["schedule"]
        if not given & {"start_fraction", "end_fraction"}:
            method["start_fraction"] = FROM_WEIGHTS_SCHEDULE["start_fraction"]
            method["end_fraction"] = FROM_WEIGHTS_SCHEDULE["end_fraction"]
        return {**data, "method": method}

    @model_validator(mode="after")
    def _coherent(self) -> Recipe:
        task, model, method = self.task.type, self.model, self.method
        definition = tasks.get(task)
        if definition.text and model.embedding_size is None:
            raise RecipeError("model.embedding_size", f"model.embedding_size is required for the {task} task")
        if not definition.text and model.embedding_size is not None:
            raise RecipeError(
                "model.embedding_size",
                f"model.embedding_size has no meaning for the {task} task (its inputs are not words)",
            )
        if model.tie_weights:
            if not definition.can_tie_weights:
                raise RecipeError(
                    "model.tie_weights",
                    f"model.tie_weights has no meaning for the {task} task (its decoder is not words)",
                )
            if model.embedding_size != model.hidden_size:
                raise RecipeError(
                    "model.tie_weights",
                    f"model.tie_weights needs embedding_size == hidden_size (got {model.embedding_size} and "
                    f"{model.hidden_size})",
                )
        definition.check(self)
        if isinstance(method, PredefinedMethod):
            self._check_predefined(method)
        if len(set(self.baselines)) != len(self.baselines):
            raise RecipeError("baselines", "baselines lists the same baseline twice")
        if self.baselines and method.type == "dense":
            raise RecipeError(
                "baselines", "baselines compare a compressed model with dense ones; the dense method is the baseline"
            )
        if self.reference in ("dense", "dense_same_params") and method.type == "dense":
            raise RecipeError(
                "reference", f"reference {self.reference} has no meaning for the dense method: it is the reference"
            )
        if self.reference in ("dense", "dense_same_params") and self.init_from is not None:
            raise RecipeError(
                "reference",
                "reference: a job that starts from init_from weights is judged against those weights (use auto)",
            )
        return self

    def reference_kind(self) -> str | None:
        """What this job's result is judged against: "initial_weights", a baseline name, or None."""
        if self.reference == "none" or self.method.type == "dense":
            return None
        if self.init_from is not None:
            return "initial_weights"
        if self.reference == "dense_same_params" or (self.reference == "auto" and self.method.type == "predefined"):
            return "dense_same_params"
        return "dense_full"

    def _check_predefined(self, method: PredefinedMethod) -> None:
        model = self.model
        if method.embedding is not None:
            if not tasks.get(self.task.type).text:
                raise RecipeError("method.embedding", f"method.embedding needs a text task, not {self.task.type}")
            width = model.embedding_size // method.embedding.blocks
            if method.embedding.blocks > model.embedding_size:
                raise RecipeError(
                    "method.embedding.blocks",
                    f"method.embedding.blocks ({method.embedding.blocks}) cannot exceed model.embedding_size "
                    f"({model.embedding_size})",
                )
            if method.embedding.density < width / model.embedding_size - 1e-12:
                raise RecipeError(
                    "method.embedding.density",
                    f"method.embedding.density ({method.embedding.density}) is below {width / model.embedding_size:.4g}"
                    ", what block 0 needs: it gives every word one block",
                )
        recurrent = method.recurrent
        if recurrent is not None and recurrent.components is not None and recurrent.components > model.hidden_size:
            raise RecipeError(
                "method.recurrent.components",
                f"method.recurrent.components ({recurrent.components}) cannot exceed model.hidden_size "
                f"({model.hidden_size})",
            )
        if recurrent is not None and recurrent.budget_of is not None:
            dense_hidden = model.hidden_size / recurrent.budget_of.hidden_scale
            if dense_hidden < 1 or not math.isfinite(dense_hidden):
                raise RecipeError(
                    "method.recurrent.budget_of.hidden_scale",
                    "method.recurrent.budget_of.hidden_scale leaves the dense model no hidden units",
                )

    # -- conveniences ---------------------------------------------------------------------------------------------

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str | bytes) -> Recipe:
        return cls.model_validate_json(text)

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> Recipe:
        import yaml

        return cls.model_validate(yaml.safe_load(text))


def recipe_json_schema() -> dict:
    """JSON Schema of the recipe, for the API documentation."""
    return Recipe.model_json_schema()


_TAGS = {
    "language_model",
    "sequence_tagging",
    "navigation",
    "adding",
    "predefined",
    "moduli_pruning",
    "magnitude_pruning",
    "dense",
}


def format_validation_error(error) -> list[dict[str, str]]:
    """pydantic errors as ``[{"param": "method.recurrent.components", "message": ...}]`` for users."""
    problems = []
    for item in error.errors():
        parts = list(item["loc"])
        # Discriminated unions put the variant's tag in the location (method.predefined.recurrent): drop it.
        parts = [p for i, p in enumerate(parts) if not (i > 0 and parts[i - 1] in ("task", "method") and p in _TAGS)]
        location = ".".join(str(part) for part in parts)
        cause = (item.get("ctx") or {}).get("error")
        if isinstance(cause, RecipeError):  # a check of the whole (or of a section): the field it names
            location = cause.field if not location or cause.field.startswith(location) else f"{location}.{cause.field}"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "int_parsing_size":  # pydantic's "Unable to parse input string as an integer, ..."
            message = f"{item['input']!r} is far above any limit of this field (python -m compress.spec prints them)"
        problems.append({"param": location, "message": message})
    return problems


if __name__ == "__main__":  # print the schema: python -m compress.spec
    print(json.dumps(recipe_json_schema(), indent=2))


def _rebuild_recipe() -> None:
    """A task was registered or removed: the recipe's ``task`` union follows (its schema, its error messages)."""
    from pydantic.fields import FieldInfo

    global Task
    Task = _task_union()
    Recipe.model_fields["task"] = FieldInfo.from_annotation(Task)
    Recipe.model_rebuild(force=True)


tasks.on_change(_rebuild_recipe)
