"""adding: sum the two marked numbers of a sequence (a long-memory test), judged by validation MSE."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from compress.tasks.base import MAX_SEQUENCE, MAX_STEPS_PER_EPOCH, Metric, StrictModel, TaskDefinition


class AddingTask(StrictModel):
    """The adding problem: sum the two marked numbers of a sequence."""

    type: Literal["adding"] = "adding"
    sequence_length: int = Field(50, ge=2, le=MAX_SEQUENCE)
    steps_per_epoch: int = Field(1000, ge=1, le=MAX_STEPS_PER_EPOCH)


def _adapter(recipe, data, device):
    from compress.problems.generated import AddingAdapter

    return AddingAdapter(
        recipe.task, recipe.model, batch_size=recipe.training.batch_size, seed=recipe.training.seed, device=device
    )


def _model(recipe, sizes):
    from compress.problems.generated import adding_model

    return adding_model(recipe.task, recipe.model, recipe.method, recipe.training.batch_size)


def _onnx_inputs(model, manifest):
    import torch

    axes = {"inputs": {0: "batch", 1: "steps"}, "prediction": {0: "batch"}}
    return model, (torch.zeros(2, 5, 2),), ["inputs"], "prediction", axes


def torch_rand(*shape, generator):
    import torch

    return torch.rand(*shape, generator=generator)


TASK = TaskDefinition(
    type="adding",
    spec=AddingTask,
    description=AddingTask.__doc__,
    metric=Metric("valid_mse", lower_is_better=True, description="mean squared error (predicting 1.0 scores ~0.167)"),
    roles={},
    build_adapter=_adapter,
    build_model=_model,
    sequence_length=lambda recipe: recipe.task.sequence_length,
    onnx_inputs=_onnx_inputs,
    sample_inputs=lambda model, batch, steps, generator: (torch_rand(batch, steps, 2, generator=generator),),
)
