"""navigation: path integration in a 2.2 m box (the moduli paper's task), judged by position error in cm.

Velocities in (metres per step), place-cell activity out; trajectories are generated unless a file is given
(``python -m compress.problems.navigation --out walks.npz`` writes one to upload).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from compress.data import validate_trajectories
from compress.tasks.base import MAX_SEQUENCE, MAX_STEPS_PER_EPOCH, Metric, Purpose, Role, StrictModel, TaskDefinition


class NavigationTask(StrictModel):
    """Path integration in a 2.2 m box (the navigation task of Mackey et al., 2024, moduli regularization):
    velocities in, place-cell activity out."""

    type: Literal["navigation"] = "navigation"
    place_cells: int = Field(512, ge=3, le=65_536)
    sequence_length: int = Field(50, ge=2, le=MAX_SEQUENCE)
    steps_per_epoch: int = Field(1000, ge=1, le=MAX_STEPS_PER_EPOCH)
    # Defaults that converge in short runs (a dense 256-unit model: 5.5 cm in 1000 CPU steps, where the paper's
    # settings had not started to learn). The paper's values: recurrent_init "default", input_scale 1.
    recurrent_init: Literal["default", "identity", "orthogonal"] = Field(
        "identity", description="W_hh initialisation: identity (IRNN) integrates from the first step"
    )
    input_scale: float = Field(
        50.0, gt=0, le=1e6, description="velocity and start code scaled by this (50 = 1/dt: velocity in m/s)"
    )


def _adapter(recipe, data, device):
    from compress.problems.generated import NavigationAdapter

    return NavigationAdapter(
        recipe.task,
        recipe.model,
        batch_size=recipe.training.batch_size,
        seed=recipe.training.seed,
        trajectories=data.get("train"),
        device=device,
    )


def _model(recipe, sizes):
    from compress.problems.generated import navigation_model

    return navigation_model(recipe.task, recipe.model, recipe.method, recipe.training.batch_size)


def _onnx_inputs(model, manifest):
    import torch

    cells, steps = manifest["recipe"]["task"]["place_cells"], 5
    axes = {"velocity": {0: "batch", 1: "steps"}, "start_code": {0: "batch"}, "place_logits": {0: "batch", 1: "steps"}}
    inputs = (torch.zeros(2, steps, 2), torch.zeros(2, cells))
    return model, inputs, ["velocity", "start_code"], "place_logits", axes


def _sample_inputs(model, batch, steps, generator):
    import torch

    velocity = torch.randn(batch, steps, 2, generator=generator) * 0.02  # metres per step
    return velocity, torch.rand(batch, model.config.place_cells, generator=generator)


TASK = TaskDefinition(
    type="navigation",
    spec=NavigationTask,
    description=NavigationTask.__doc__,
    metric=Metric("valid_position_error_cm", lower_is_better=True, description="mean decoded position error, cm"),
    roles={"train": Role("trajectories", description="an .npz of trajectories (else generated)")},
    purposes=(Purpose("trajectories", validate_trajectories, ".npz: velocity, position, start (metres per step)"),),
    build_adapter=_adapter,
    build_model=_model,
    sequence_length=lambda recipe: recipe.task.sequence_length,
    output_width=lambda recipe, sizes: recipe.task.place_cells,
    onnx_inputs=_onnx_inputs,
    sample_inputs=_sample_inputs,
)
