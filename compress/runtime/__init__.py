"""Run a sparseq checkpoint fast: each tensor in its fastest form on the device, chosen by a short measurement.

    from compress import runtime

    model = runtime.load("model.safetensors", device="cpu")
    logits, state = model(tokens)              # a whole batch of sequences, as the training model is called
    y_t, state = model.step(token_t, state)    # streaming, one time step (batch-1 serving)
    model.plan()                               # which tensor runs how (dense, CSR, block) and why

Outputs equal the dense model's within float32 rounding (tests: max abs difference <= 2e-5 on unit-scale outputs).
"""

from __future__ import annotations

from pathlib import Path

import torch

from compress.runtime.forms import MatrixPlan, choose
from compress.runtime.model import FastLinear, InferenceModel
from compress.runtime.recurrent import FastRecurrent

__all__ = ["FastLinear", "FastRecurrent", "InferenceModel", "MatrixPlan", "choose", "from_model", "load"]


def from_model(model: torch.nn.Module, *, measure: bool = True, force: str | None = None, budget_s: float = 0.01):
    """An :class:`InferenceModel` of an in-memory model (it is changed in place: pass a copy to keep the original).

    ``force``: ``"dense"``, ``"csr"``, ``"block"`` (every tensor in that form where it exists, step by step),
    ``"native"`` (the dense-equivalent model on the fused kernels) or ``"components"`` (predefined layers' own
    formulation); ``None`` measures.
    """
    return InferenceModel(model, measure=measure, force=force, budget_s=budget_s)


def load(
    path: str | Path,
    device: str | torch.device = "cpu",
    *,
    measure: bool = True,
    force: str | None = None,
    budget_s: float = 0.01,
) -> InferenceModel:
    """Rebuild the checkpoint's model on ``device`` (nothing is unpickled) and plan each tensor's form there."""
    from compress.pipeline import load_checkpoint

    model, manifest = load_checkpoint(path, device=device)
    return InferenceModel(model, manifest, measure=measure, force=force, budget_s=budget_s)
