"""The adding problem (Hochreiter & Schmidhuber; used by the moduli paper, Mackey et al., 2024).

Each sequence has two channels: random values in [0, 1), and a marker that is 1 at exactly two positions (one in each
half of the sequence) and 0 elsewhere. The target is the sum of the two marked values. Predicting the constant 1 gives
MSE = Var(U + U') = 1/6, the level a model must beat. Paper: length 50, ReLU RNN with 128 units, Adam 1e-4, MSE.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# MSE of always answering the mean 1.0: Var(U1 + U2) = 2 * 1/12.
CONSTANT_BASELINE_MSE = 1.0 / 6.0


@dataclass(frozen=True)
class AddingConfig:
    sequence_length: int = 50
    hidden_size: int = 128
    batch_size: int = 64

    def __post_init__(self) -> None:
        if self.sequence_length < 2:
            raise ValueError(f"sequence_length must be >= 2 (one marker per half), got {self.sequence_length}")
        for name in ("hidden_size", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def adding_batch(
    batch_size: int, sequence_length: int = 50, *, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Inputs (batch, T, 2) and targets (batch,): the sum of the values at the two marked positions."""
    if sequence_length < 2:
        raise ValueError(f"sequence_length must be >= 2, got {sequence_length}")
    values = torch.rand(batch_size, sequence_length, generator=generator)
    half = sequence_length // 2
    first = torch.randint(0, half, (batch_size,), generator=generator)
    second = torch.randint(half, sequence_length, (batch_size,), generator=generator)
    markers = torch.zeros(batch_size, sequence_length)
    rows = torch.arange(batch_size)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    targets = values[rows, first] + values[rows, second]
    return torch.stack([values, markers], dim=-1), targets


class AddingRNN(nn.Module):
    """ReLU RNN reading the two channels; a linear readout of the last hidden state predicts the sum. ``rnn``
    replaces the paper's layer (same call conventions, batch_first)."""

    def __init__(self, config: AddingConfig | None = None, rnn: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config or AddingConfig()
        self.rnn = rnn or nn.RNN(2, self.config.hidden_size, nonlinearity="relu", batch_first=True)
        self.readout = nn.Linear(self.config.hidden_size, 1)

    def forward(self, inputs: Tensor) -> Tensor:
        hidden, _ = self.rnn(inputs)
        return self.readout(hidden[:, -1]).squeeze(-1)


def adding_loss(predictions: Tensor, targets: Tensor) -> Tensor:
    return F.mse_loss(predictions, targets)
