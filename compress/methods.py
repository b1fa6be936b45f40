"""The compression methods' part of training, as :class:`compress.train.MethodHooks`.

- dense and predefined: nothing to do during training (predefined sparsity lives in the model's structure);
- magnitude_pruning: a gradual schedule over the steps of training, masks re-applied after every optimizer step;
- moduli_pruning: the same pruning plus the moduli regularizer's penalty on the loss.

The schedule runs from ``start_fraction`` to ``end_fraction`` of all steps (the rest fine-tunes at the target), and
the masks are recomputed about 50 times on the way rather than at every step: each recomputation ranks every weight.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from compress.moduli import ModuliRegularizer
from compress.pruning import Pruner, PruningSchedule, prunable_names
from compress.spec import MagnitudePruningMethod, ModuliPruningMethod
from compress.train import MethodHooks

PRUNING_EVENTS = 50
# Scale-free strength: the recipe's strength is the paper's lambda at its 4096 neurons; the per-weight penalty is
# rescaled for other widths (see compress.moduli.regularizer).
WIDTH_EXPONENT = 2.0


class PruningHooks(MethodHooks):
    def __init__(
        self,
        method: MagnitudePruningMethod | ModuliPruningMethod,
        *,
        seed: int = 0,
        fixed_masks: dict[str, Tensor] | None = None,
    ) -> None:
        """``fixed_masks``: train with these masks from the first step and never re-prune (the lottery check)."""
        self.method, self.seed, self.fixed_masks = method, seed, fixed_masks
        self.pruner: Pruner | None = None
        self.regularizer: ModuliRegularizer | None = None

    def attach(self, model: nn.Module, optimizer: torch.optim.Optimizer, total_steps: int) -> None:
        method = self.method
        self.start = round(method.start_fraction * total_steps)
        self.end = max(self.start + 1, round(method.end_fraction * total_steps))
        schedule = PruningSchedule(method.target_sparsity, method.schedule, start=self.start, end=self.end)
        self.pruner = Pruner(
            model,
            prunable_names(model, method.targets),
            schedule=schedule,
            allocation=method.allocation,
            floors=method.floors,
            min_density=method.min_density,
            per_gate=method.per_gate,
        )
        self.pruner.attach(optimizer)
        if self.fixed_masks is not None:
            self.pruner.set_masks(self.fixed_masks)
            self.pruner.sparsity = method.target_sparsity
        self.interval = max(1, (self.end - self.start) // PRUNING_EVENTS)
        if isinstance(method, ModuliPruningMethod):
            self.regularizer = ModuliRegularizer(
                model,
                space=method.space,
                inhibitor=method.inhibitor,
                invert=method.invert,
                permute=method.permute,
                strength=method.strength,
                width_exponent=WIDTH_EXPONENT,
                learn_geometry=method.learned_geometry,
                seed=self.seed,
            )
            learned = [p for p in self.regularizer.parameters() if p.requires_grad]
            if learned:
                optimizer.add_param_group({"params": learned})

    def penalty(self, model: nn.Module) -> Tensor | None:
        return self.regularizer() if self.regularizer is not None else None

    def after_step(self, step: int) -> None:
        if self.fixed_masks is not None:
            return
        due = step >= self.start and ((step - self.start) % self.interval == 0 or step >= self.end)
        if due and self.pruner.sparsity < self.method.target_sparsity:
            self.pruner.update(step)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"masks": dict(self.pruner.masks), "sparsity": self.pruner.sparsity}
        if self.regularizer is not None:
            state["regularizer"] = self.regularizer.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["masks"]:
            self.pruner.set_masks(state["masks"])
        self.pruner.sparsity = state["sparsity"]
        if self.regularizer is not None and "regularizer" in state:
            self.regularizer.load_state_dict(state["regularizer"])

    def phase(self, step: int) -> str:
        if self.fixed_masks is not None:
            return "lottery"
        return "train" if step < self.start else ("prune" if step < self.end else "fine_tune")

    def summary(self) -> dict[str, Any]:
        # The sparsity of the pruned tensors (what target_sparsity asks for); the whole model's is in the report.
        return {"pruned_sparsity": self.pruner.report()["total"]["sparsity"]}

    def finish(self) -> dict[str, Tensor]:
        """Bake the masks into the weights and drop the buffers; returns the final masks."""
        return self.pruner.squash()


def build_hooks(method, *, seed: int = 0) -> MethodHooks:
    if isinstance(method, MagnitudePruningMethod | ModuliPruningMethod):
        return PruningHooks(method, seed=seed)
    return MethodHooks()
