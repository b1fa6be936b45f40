"""Task adapters for the generated tasks of the moduli paper: navigation (path integration) and the adding problem.

Training batches are drawn from a generator seeded by (seed, epoch), so a resumed run replays the same data;
validation uses a fixed set of batches drawn once from its own seed. Navigation can also train on uploaded
trajectories (see compress.data for the .npz keys): the last 10% of them are held out for validation.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from compress.data import DataError, validate_trajectories
from compress.models import build_recurrent
from compress.problems.adding import AddingConfig, AddingRNN, adding_batch, adding_loss
from compress.problems.navigation import NavigationConfig, NavigationProblem, NavigationRNN
from compress.spec import AddingTask, ModelSpec, NavigationTask, PredefinedMethod

VALID_BATCHES = 5


def _generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def _recipe_recurrent(spec: ModelSpec, method, *, paper_cell: str, bias: bool) -> nn.Module | None:
    """The recipe's recurrent layer, or None where it is exactly the paper's dense one (the model builds that)."""
    sparse = isinstance(method, PredefinedMethod) and method.recurrent is not None
    if sparse or spec.cell != paper_cell or spec.num_layers != 1:
        return build_recurrent(spec, method, 2, batch_first=True, bias=bias)
    return None


def navigation_config(task: NavigationTask, spec: ModelSpec, batch_size: int) -> NavigationConfig:
    return NavigationConfig(
        hidden_size=spec.hidden_size,
        place_cells=task.place_cells,
        sequence_length=task.sequence_length,
        batch_size=batch_size,
        recurrent_init=task.recurrent_init,
        velocity_input_scale=task.input_scale,
        start_code_scale=task.input_scale,
    )


def navigation_model(task: NavigationTask, spec: ModelSpec, method, batch_size: int) -> nn.Module:
    rnn = _recipe_recurrent(spec, method, paper_cell="rnn_relu", bias=False)
    return NavigationRNN(navigation_config(task, spec, batch_size), rnn)


def adding_model(task: AddingTask, spec: ModelSpec, method, batch_size: int) -> nn.Module:
    rnn = _recipe_recurrent(spec, method, paper_cell="rnn_relu", bias=True)
    config = AddingConfig(sequence_length=task.sequence_length, hidden_size=spec.hidden_size, batch_size=batch_size)
    return AddingRNN(config, rnn)


class NavigationAdapter:
    metric = "valid_position_error_cm"
    lower_is_better = True

    def __init__(
        self,
        task: NavigationTask,
        spec: ModelSpec,
        *,
        batch_size: int,
        seed: int,
        trajectories: str | Path | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        if spec.bidirectional:
            raise ValueError("navigation integrates velocities forward in time: model.bidirectional must be false")
        self.task = task
        self.config = navigation_config(task, spec, batch_size)
        self.problem = NavigationProblem(self.config, seed=seed)
        self.spec, self.seed, self.device = spec, seed, torch.device(device)
        self.uploaded = None
        if trajectories is not None:
            self.uploaded = self._load(trajectories)
            count = self.uploaded["velocity"].shape[0]
            held = max(1, math.ceil(count * 0.1))
            self.train_index, self.valid_index = torch.arange(count - held), torch.arange(count - held, count)
            self.steps_per_epoch = max(1, math.ceil(len(self.train_index) / batch_size))
        else:
            self.steps_per_epoch = task.steps_per_epoch
        self.valid = self._validation_batches()

    @staticmethod
    def _load(path: str | Path) -> dict[str, Tensor]:
        checked = validate_trajectories(path)
        if not checked.ok:
            raise DataError(checked, path)
        with np.load(path, allow_pickle=False) as archive:
            return {k: torch.from_numpy(archive[k]).float() for k in ("velocity", "position", "start")}

    def _from_uploaded(self, index: Tensor) -> tuple[Tensor, ...]:
        data = self.uploaded
        cells = self.problem.place_cells
        return (
            data["velocity"][index],
            cells.code(data["start"][index]),
            cells.code(data["position"][index]),
            data["position"][index],
        )

    def _validation_batches(self) -> list[tuple[Tensor, ...]]:
        if self.uploaded is not None:
            return [self._from_uploaded(self.valid_index)]
        generator = _generator(self.seed + 7919, 0)
        return [self.problem.batch(generator=generator) for _ in range(VALID_BATCHES)]

    def build_model(self, method) -> nn.Module:
        return navigation_model(self.task, self.spec, method, self.config.batch_size)

    def start_epoch(self, epoch: int) -> None:
        pass

    def batches(self, epoch: int) -> Iterator[tuple[Tensor, ...]]:
        generator = _generator(self.seed, epoch)
        if self.uploaded is not None:
            order = self.train_index[torch.randperm(len(self.train_index), generator=generator)]
            for start in range(0, len(order), self.config.batch_size):
                yield tuple(
                    t.to(self.device) for t in self._from_uploaded(order[start : start + self.config.batch_size])
                )
            return
        for _ in range(self.steps_per_epoch):
            yield tuple(t.to(self.device) for t in self.problem.batch(generator=generator))

    def loss(self, model: nn.Module, batch) -> Tensor:
        velocity, start_code, targets, _ = batch
        return self.problem.loss(model(velocity, start_code), targets)

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        was_training = model.training
        model.eval()
        losses, errors = [], []
        for velocity, start_code, targets, position in self.valid:
            logits = model(velocity.to(self.device), start_code.to(self.device)).cpu()
            losses.append(self.problem.loss(logits, targets).item())
            errors.append(self.problem.position_error_cm(logits, position).item())
        model.train(was_training)
        return {"valid_loss": sum(losses) / len(losses), "valid_position_error_cm": sum(errors) / len(errors)}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class AddingAdapter:
    metric = "valid_mse"
    lower_is_better = True

    def __init__(
        self, task: AddingTask, spec: ModelSpec, *, batch_size: int, seed: int, device: torch.device | str = "cpu"
    ) -> None:
        self.config = AddingConfig(
            sequence_length=task.sequence_length, hidden_size=spec.hidden_size, batch_size=batch_size
        )
        self.task, self.spec, self.seed, self.device = task, spec, seed, torch.device(device)
        self.steps_per_epoch = task.steps_per_epoch
        generator = _generator(seed + 7919, 0)
        self.valid = [
            adding_batch(4 * batch_size, task.sequence_length, generator=generator) for _ in range(VALID_BATCHES)
        ]

    def build_model(self, method) -> nn.Module:
        return adding_model(self.task, self.spec, method, self.config.batch_size)

    def start_epoch(self, epoch: int) -> None:
        pass

    def batches(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        generator = _generator(self.seed, epoch)
        for _ in range(self.steps_per_epoch):
            inputs, targets = adding_batch(self.config.batch_size, self.config.sequence_length, generator=generator)
            yield inputs.to(self.device), targets.to(self.device)

    def loss(self, model: nn.Module, batch) -> Tensor:
        inputs, targets = batch
        return adding_loss(model(inputs), targets)

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        was_training = model.training
        model.eval()
        mse = [adding_loss(model(x.to(self.device)), y.to(self.device)).item() for x, y in self.valid]
        model.train(was_training)
        return {"valid_mse": sum(mse) / len(mse)}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
