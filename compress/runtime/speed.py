"""A job's measured speed: the compressed model on the runtime against its dense equivalent, on the job's device.

Both models are timed side by side (interleaved rounds, the minimum of each): per-token latency at batch 1 (a whole
sequence in one call) and per-token time at batch 32 (throughput). The dense equivalent is the same checkpoint with
every tensor dense (for a predefined-sparse model: the dense layer of the same width, zeros filled in), run the faster
of two ways per batch size: PyTorch's fused kernel (``force="native"``, what ``torch.nn.LSTM`` does) and the
runtime's step loop on dense matrices (``force="dense"``). On CPU the fused kernel reorders its weights for oneDNN on
every call, which costs more than the products at batch 1: comparing with it alone would flatter the sparse forms.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from compress import tasks
from compress.runtime.forms import race
from compress.runtime.model import InferenceModel


def sample_inputs(model: InferenceModel, batch: int, steps: int, device: torch.device) -> tuple:
    """Arguments for one call of the model: random data of the task's shape (its definition's ``sample_inputs``)."""
    task = model.manifest["recipe"]["task"]["type"]
    make = tasks.get(task).sample_inputs
    if make is None:
        raise ValueError(f"the {task} task defines no sample inputs, so its speed cannot be measured")
    inputs = make(model.model, batch, steps, torch.Generator().manual_seed(0))
    return tuple(value.to(device) for value in inputs)


def measure_speed(
    path: str | Path, device: torch.device | str = "cpu", *, steps: int = 16, budget_s: float = 0.25
) -> dict[str, Any]:
    """``speedup_latency`` and ``speedup_throughput`` (dense time / runtime time) and the times behind them."""
    from compress import runtime

    device = torch.device(device)
    # the load-time choice gets a tenth of the comparison's budget per race (it was 0.01 s: on a busy worker that
    # picked a slower executor for a small predefined model, 0.58x the dense one in a newcomer's job)
    fast = runtime.load(path, device, budget_s=budget_s / 10)
    native = runtime.load(path, device, force="native")
    stepwise = runtime.load(path, device, force="dense")
    result: dict[str, Any] = {"device": str(device), "threads": torch.get_num_threads(), "steps": steps}
    for label, batch in (("latency", 1), ("throughput", 32)):
        inputs = sample_inputs(fast, batch, steps, device)
        calls = {
            "dense_fused": lambda i=inputs: native(*i),
            "dense_steps": lambda i=inputs: stepwise(*i),
            "runtime": lambda i=inputs: fast(*i),
        }
        seconds = race(calls, budget_s, device)
        seconds["dense"] = min(seconds["dense_fused"], seconds["dense_steps"])
        tokens = batch * steps
        result[f"{label}_us_per_token"] = {k: round(v / tokens * 1e6, 3) for k, v in seconds.items()}
        result[f"speedup_{label}"] = round(seconds["dense"] / seconds["runtime"], 3)
    result["plan"] = fast.plan()
    return result
