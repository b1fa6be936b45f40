"""The papers' problems as PyTorch code: models, data and losses of the adding, navigation and text tasks.

The recipe-facing definition of each task (its recipe class, data roles, metric) is in :mod:`compress.tasks`; this
package is what those definitions build when a job runs (it imports torch)."""

from compress.problems.adding import CONSTANT_BASELINE_MSE, AddingConfig, AddingRNN, adding_batch, adding_loss
from compress.problems.navigation import (
    NavigationConfig,
    NavigationProblem,
    NavigationRNN,
    PlaceCells,
    Trajectories,
    simulate_trajectories,
)

__all__ = [
    "CONSTANT_BASELINE_MSE",
    "AddingConfig",
    "AddingRNN",
    "NavigationConfig",
    "NavigationProblem",
    "NavigationRNN",
    "PlaceCells",
    "Trajectories",
    "adding_batch",
    "adding_loss",
    "simulate_trajectories",
]
