"""The inference model: a checkpoint's model with every recurrent stack and sparse linear layer swapped for a module
that runs each tensor in its fastest form, a record of what runs how (``plan()``), and a streaming ``step``."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from compress.models import LanguageModel, SequenceTagger
from compress.predefined import SparseEmbedding, SparseRecurrent
from compress.problems.adding import AddingRNN
from compress.problems.navigation import NavigationRNN
from compress.runtime.forms import CSR_MIN_SPARSITY, MatrixPlan, choose
from compress.runtime.recurrent import FastRecurrent


class FastLinear(nn.Module):
    """``nn.Linear`` whose weight runs dense or CSR, chosen by :func:`compress.runtime.forms.choose`."""

    def __init__(self, linear: nn.Linear, name: str, **options: Any) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.plan = choose(f"{name}.weight", linear.weight, **options)
        self.bias = None if linear.bias is None else linear.bias.detach()

    def forward(self, x: Tensor) -> Tensor:
        flat = x.reshape(-1, self.in_features)
        out = self.plan(flat)
        if self.bias is not None:
            out = out + self.bias
        return out.view(*x.shape[:-1], self.out_features)


def _set(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)


class InferenceModel(nn.Module):
    """Call it like the model it came from (a whole batch of sequences), or stream it with :meth:`step`."""

    def __init__(
        self,
        model: nn.Module,
        manifest: dict[str, Any] | None = None,
        *,
        measure: bool = True,
        force: str | None = None,
        budget_s: float = 0.01,
    ) -> None:
        super().__init__()
        model.eval()
        self.manifest = manifest or {}
        self.device = next(model.parameters()).device
        self.threads = torch.get_num_threads()
        options = {"measure": measure, "force": force, "budget_s": budget_s}
        self.recurrent: list[FastRecurrent] = []
        self.linears: list[tuple[str, FastLinear]] = []
        self.kept: list[dict[str, Any]] = []
        with torch.no_grad():
            for name, module in list(model.named_modules()):
                if isinstance(module, nn.RNNBase | SparseRecurrent):
                    fast = FastRecurrent(module, name=name, **options)
                    _set(model, name, fast)
                    self.recurrent.append(fast)
                elif isinstance(module, nn.Linear):
                    sparsity = 1 - int((module.weight != 0).sum()) / module.weight.numel()
                    if sparsity >= CSR_MIN_SPARSITY or force == "csr":
                        linear_force = "dense" if force in ("native", "components") else force
                        fast = FastLinear(module, name, **(options | {"force": linear_force}))
                        _set(model, name, fast)
                        self.linears.append((name, fast))
                    else:
                        self.kept.append(self._kept(f"{name}.weight", module.weight, "dense: not sparse enough"))
                elif isinstance(module, nn.Embedding | SparseEmbedding):
                    weight = module.weight if isinstance(module, nn.Embedding) else None
                    self.kept.append(self._kept(f"{name}", weight, self._embedding_reason(module)))
        self.model = model

    @staticmethod
    def _kept(name: str, weight: Tensor | None, reason: str) -> dict[str, Any]:
        entry = {"tensor": name, "form_batch1": "dense", "form_batch32": "dense", "reason": reason}
        if weight is not None:
            entry["shape"] = list(weight.shape)
            entry["sparsity"] = round(1 - int((weight != 0).sum()) / weight.numel(), 4)
        return entry

    @staticmethod
    def _embedding_reason(module: nn.Module) -> str:
        if isinstance(module, SparseEmbedding):
            return f"lookup in {len(module.blocks)} dense blocks (predefined-sparse embedding)"
        return "lookup table: one row read per token"

    # -- what runs how -----------------------------------------------------------------------------------------------

    def matrix_plans(self) -> list[MatrixPlan]:
        return [p for fast in self.recurrent for p in fast.matrix_plans()] + [fast.plan for _, fast in self.linears]

    def plan(self) -> dict[str, Any]:
        """Which tensor runs how and why: per tensor its form at batch 1 and batch 32 with the measured times, per
        recurrent stack the executor (fused dense kernel, per-tensor forms, or the predefined components)."""
        return {
            "device": str(self.device),
            "threads": self.threads,
            "modules": [fast.describe() for fast in self.recurrent],
            "tensors": [p.describe() for p in self.matrix_plans()] + self.kept,
        }

    def forward(self, *args, **kwargs):
        with torch.inference_mode():
            return self.model(*args, **kwargs)

    # -- streaming ---------------------------------------------------------------------------------------------------

    def start_state(self, start_code: Tensor) -> Tensor:
        """Navigation: the initial hidden state from the start position's place-cell code (batch, place_cells)."""
        model = self.model
        if not isinstance(model, NavigationRNN):
            raise ValueError("start_state is for navigation models; other models start from zeros (state=None)")
        with torch.inference_mode():
            return model.encoder(start_code * model.config.start_code_scale).unsqueeze(0)

    def step(self, x_t: Tensor, state=None):
        """One time step for streaming: ``x_t`` is one token id per sequence (batch,) for text models, one input
        vector (batch, features) otherwise; returns (this step's output, the state to pass to the next call)."""
        model = self.model
        with torch.inference_mode():
            if isinstance(model, LanguageModel):
                hidden, state = model.rnn.step(model.embedding(x_t), state)
                if not model.tied:
                    return model.decoder(hidden), state
                if isinstance(model.embedding, SparseEmbedding):
                    return model.embedding.decode(hidden) + model.decoder_bias, state
                return hidden @ model.embedding.weight.t() + model.decoder_bias, state
            if isinstance(model, SequenceTagger):
                hidden, state = model.rnn.step(model.embedding(x_t), state)
                return model.output(torch.tanh(model.hidden(hidden))), state
            if isinstance(model, NavigationRNN):
                if state is None:
                    raise ValueError("navigation starts from the start position: pass state=model.start_state(code)")
                hidden, state = model.rnn.step(x_t * model.config.velocity_input_scale, state)
                return model.decoder(hidden), state
            if isinstance(model, AddingRNN):
                hidden, state = model.rnn.step(x_t, state)
                return model.readout(hidden).squeeze(-1), state
        raise ValueError(f"step() does not know how to stream a {type(model).__name__}")
