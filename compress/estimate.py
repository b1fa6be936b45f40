"""What a recipe will cost, before any compute: parameters, checkpoint bytes, FLOPs and training memory.

The model is built on PyTorch's ``meta`` device (shapes only, no memory), so a 4096-unit model is estimated instantly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from compress import tasks
from compress.pipeline import build_model
from compress.report import dense_entries, flops_per_token
from compress.spec import MagnitudePruningMethod, ModuliPruningMethod, Recipe

PTB_TAGS = 45
BYTES = 4  # float32


@dataclass(frozen=True)
class Estimate:
    parameters: int
    nonzero_parameters: int
    checkpoint_bytes: int
    dense_checkpoint_bytes: int
    flops_per_token: int
    flops_per_step: int
    training_memory_bytes: int
    training_runs: int  # the main run, the reference, baselines and the lottery check: the job's training time
    weights: list[dict]  # the weight contract: every tensor's name and shape (an init_from file must match it)

    def as_dict(self) -> dict:
        return asdict(self)


def estimate(recipe: Recipe, *, vocab_size: int | None = None, num_tags: int | None = None) -> Estimate:
    sizes = {
        "vocab_size": vocab_size or getattr(recipe.task, "max_vocab", None) or 10_000,
        "num_tags": num_tags or PTB_TAGS,
    }
    with torch.device("meta"):
        model = build_model(recipe, sizes)
    parameters = sum(p.numel() for p in model.parameters())
    matrices = sum(p.numel() for p in model.parameters() if p.dim() >= 2)
    method = recipe.method
    pruned = isinstance(method, MagnitudePruningMethod | ModuliPruningMethod)
    kept_matrices = round(matrices * (1 - method.target_sparsity)) if pruned else matrices
    nonzero = parameters - matrices + kept_matrices
    # Pruned matrices: values + about one byte of position per kept entry (the "gaps" encoding); the rest dense.
    checkpoint = (parameters - matrices) * BYTES + (kept_matrices * (BYTES + 1) if pruned else matrices * BYTES)
    dense_bytes = dense_entries(model) * BYTES
    flops_token = flops_per_token(model, kept_fraction=(1 - method.target_sparsity) if pruned else 1.0)
    tokens = recipe.training.batch_size * _sequence_length(recipe)
    flops_step = 3 * flops_token * tokens  # forward + backward (about twice the forward)
    hidden_state = recipe.model.hidden_size * recipe.model.num_layers * (2 if recipe.model.bidirectional else 1)
    outputs = tasks.get(recipe.task.type).output_width(recipe, sizes)  # per-step logits kept for the backward pass
    activations = tokens * (hidden_state * 8 + outputs) * BYTES
    optimizer_states = {"sgd": 0, "adam": 2, "adamw": 2}[recipe.training.optimizer]
    memory = parameters * BYTES * (2 + optimizer_states) + activations
    contract = [{"name": n, "shape": list(t.shape)} for n, t in model.state_dict().items()]
    return Estimate(
        parameters, nonzero, checkpoint, dense_bytes, flops_token, flops_step, memory, training_runs(recipe), contract
    )


def training_runs(recipe: Recipe) -> int:
    """How many times the job trains the recipe's length: the main run, the lottery check, the dense reference (one
    of the baselines when it is one of them) and the baselines."""
    dense_runs = set(recipe.baselines)
    kind = recipe.reference_kind()
    if kind in ("dense_full", "dense_same_params"):
        dense_runs.add(kind)
    return 1 + int(getattr(recipe.method, "lottery_check", False)) + len(dense_runs)


def _sequence_length(recipe: Recipe) -> int:
    return tasks.get(recipe.task.type).sequence_length(recipe)
