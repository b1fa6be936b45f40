"""Tasks from the papers: model + data + metric, each usable on its own."""

from compress.tasks.adding import CONSTANT_BASELINE_MSE, AddingConfig, AddingRNN, adding_batch, adding_loss
from compress.tasks.navigation import (
    NavigationConfig,
    NavigationRNN,
    NavigationTask,
    PlaceCells,
    Trajectories,
    simulate_trajectories,
)

__all__ = [
    "CONSTANT_BASELINE_MSE",
    "AddingConfig",
    "AddingRNN",
    "NavigationConfig",
    "NavigationRNN",
    "NavigationTask",
    "PlaceCells",
    "Trajectories",
    "adding_batch",
    "adding_loss",
    "simulate_trajectories",
]
