"""Unstructured magnitude pruning with masks kept beside the weights (METHODS.md section 2).

- ``global_magnitude_masks``: one threshold over all tensors together (the paper's global L1 pruning).
- :class:`Pruner`: holds a boolean mask per parameter as a buffer on the parameter's module (``<name>_mask``, so it
  travels with ``state_dict``), re-applies it in place after every optimizer step and zeroes the masked gradients, so
  pruned weights stay exactly zero under Adam/AdamW (whose moment estimates would otherwise move them again).
  The weights are written in place and never re-parametrised: ``torch.nn.utils.prune`` replaces an LSTM's
  ``weight_hh_l0`` by a computed tensor, which breaks the flat weight buffer that cuDNN/oneDNN kernels use; here
  ``nn.LSTM`` keeps its own parameters and kernels.
- Scope: "global" (one threshold over every tensor), "tensor" (each tensor to the same sparsity), "gate" (each gate
  block of a packed LSTM/GRU tensor on its own, other tensors per tensor) — so no gate is stripped bare.
- Schedules (:class:`PruningSchedule`): one-shot, linear (the paper) and cubic (Zhu & Gupta 2017); each reaches its
  final sparsity exactly at its last step. Masks are cumulative: a pruned weight never comes back.
- ``squash()`` bakes the masks into the weights and removes buffers and hooks; ``report()`` gives achieved sparsity;
  ``lottery_retrain`` re-initialises a model, loads only the masks, and retrains it with your training function.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from compress.predefined.layout import gate_count
from compress.predefined.recurrent import SparseRecurrent

Scope = Literal["global", "tensor", "gate"]
_RNN_GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}
_CELL_GATES = {nn.LSTMCell: 4, nn.GRUCell: 3, nn.RNNCell: 1}


def _check_sparsity(sparsity: float) -> float:
    if not 0 <= sparsity <= 1:
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
    return float(sparsity)


def _prune_smallest(scores: Tensor, count: int) -> Tensor:
    """Flat bool mask with exactly ``count`` False entries at the smallest scores (ties broken arbitrarily)."""
    keep = torch.ones(scores.numel(), dtype=torch.bool, device=scores.device)
    if count > 0:
        keep[torch.topk(scores, count, largest=False, sorted=False).indices] = False
    return keep


def _scores(tensor: Tensor, previous: Tensor | None) -> Tensor:
    # Already-pruned entries score below every magnitude, so they are pruned first and stay pruned (cumulative masks).
    scores = tensor.detach().abs().flatten().float()
    if previous is not None:
        scores = scores.masked_fill(~previous.flatten().to(scores.device), -1.0)
    return scores


def _prune_count(sparsity: float, numel: int, previous: Tensor | None) -> int:
    count = round(sparsity * numel)
    if previous is not None:
        count = max(count, int((~previous).sum()))
    return count


def global_magnitude_masks(
    tensors: Mapping[str, Tensor], sparsity: float, *, previous: Mapping[str, Tensor] | None = None
) -> dict[str, Tensor]:
    """Masks (True = kept) pruning exactly round(sparsity * n) of the n entries of all tensors together, smallest |w|
    first. With ``previous`` masks, entries already pruned stay pruned (and count toward the total)."""
    _check_sparsity(sparsity)
    if not tensors:
        return {}
    previous = previous or {}
    names = list(tensors)
    scores = torch.cat([_scores(tensors[n], previous.get(n)) for n in names])
    prior = None
    if previous:
        prior = torch.cat([previous.get(n, torch.ones_like(tensors[n], dtype=torch.bool)).flatten() for n in names])
    keep = _prune_smallest(scores, _prune_count(sparsity, scores.numel(), prior))
    masks, start = {}, 0
    for name in names:
        numel = tensors[name].numel()
        masks[name] = keep[start : start + numel].view(tensors[name].shape).to(tensors[name].device)
        start += numel
    return masks


def tensor_magnitude_mask(tensor: Tensor, sparsity: float, *, previous: Tensor | None = None, gates: int = 1) -> Tensor:
    """Mask of one tensor pruned to ``sparsity``; with ``gates`` > 1 each of the G row blocks separately."""
    _check_sparsity(sparsity)
    if tensor.size(0) % gates:
        raise ValueError(f"a tensor of shape {tuple(tensor.shape)} has no {gates} equal gate blocks along its rows")
    blocks = tensor.detach().reshape(gates, -1)
    prior = None if previous is None else previous.reshape(gates, -1)
    rows = []
    for g in range(gates):
        block_prior = None if prior is None else prior[g]
        count = _prune_count(sparsity, blocks[g].numel(), block_prior)
        rows.append(_prune_smallest(_scores(blocks[g], block_prior), count))
    return torch.stack(rows).view(tensor.shape).to(tensor.device)


def magnitude_masks(
    tensors: Mapping[str, Tensor],
    sparsity: float,
    *,
    scope: Scope = "global",
    gates: Mapping[str, int] | None = None,
    previous: Mapping[str, Tensor] | None = None,
) -> dict[str, Tensor]:
    """Masks for ``scope`` "global", "tensor" or "gate" (``gates``: name -> number of packed gate blocks)."""
    if scope == "global":
        return global_magnitude_masks(tensors, sparsity, previous=previous)
    if scope not in ("tensor", "gate"):
        raise ValueError(f"scope must be 'global', 'tensor' or 'gate', got {scope!r}")
    previous, gates = previous or {}, gates or {}
    return {
        name: tensor_magnitude_mask(
            tensor, sparsity, previous=previous.get(name), gates=gates.get(name, 1) if scope == "gate" else 1
        )
        for name, tensor in tensors.items()
    }


def packed_gates(model: nn.Module) -> dict[str, int]:
    """Parameter name -> number of gate blocks packed along its rows (LSTM 4, GRU 3), for every recurrent layer."""
    result = {}
    for prefix, module in model.named_modules():
        dot = f"{prefix}." if prefix else ""
        if isinstance(module, SparseRecurrent):
            count = gate_count(module.cell)
        elif isinstance(module, nn.RNNBase):
            count = _RNN_GATES[module.mode]
        elif type(module) in _CELL_GATES:
            count = _CELL_GATES[type(module)]
        else:
            continue
        for name, _ in module.named_parameters(recurse=False):
            if not name.startswith("weight_hr"):  # LSTM projection weights are not gate-packed
                result[dot + name] = count
    return result


@dataclass(frozen=True)
class PruningSchedule:
    """Target sparsity per step: 0 (or ``initial``) until ``start``, ``final`` from ``end`` on.

    kind "linear" (paper): initial + (final - initial) * (t - start) / (end - start). The paper's navigation schedule,
    target * e / (E - 1) at epoch e, is start=0, end=E-1.
    kind "cubic" (Zhu & Gupta): final + (initial - final) * (1 - (t - start) / (end - start))^3 — prunes fast while
    many weights are redundant, slowly near the end.
    kind "one_shot": final at ``end``, nothing before.
    """

    final: float
    kind: Literal["one_shot", "linear", "cubic"] = "linear"
    start: int = 0
    end: int = 0
    initial: float = 0.0

    def __post_init__(self) -> None:
        _check_sparsity(self.final)
        _check_sparsity(self.initial)
        if self.kind not in ("one_shot", "linear", "cubic"):
            raise ValueError(f"schedule kind must be 'one_shot', 'linear' or 'cubic', got {self.kind!r}")
        if self.end < self.start:
            raise ValueError(f"schedule end ({self.end}) must not come before its start ({self.start})")

    def sparsity(self, step: int) -> float:
        if step >= self.end:
            return self.final
        if self.kind == "one_shot" or step < self.start:
            return 0.0 if self.kind == "one_shot" else self.initial
        progress = (step - self.start) / (self.end - self.start)
        if self.kind == "linear":
            return self.initial + (self.final - self.initial) * progress
        return self.final + (self.initial - self.final) * (1.0 - progress) ** 3


def default_prunable(model: nn.Module) -> list[str]:
    """Every weight matrix (parameters with >= 2 dimensions): encoder, W_ih, W_hh, decoder; no biases."""
    return [name for name, p in model.named_parameters() if p.dim() >= 2]


class Pruner:
    """Magnitude pruning of ``names`` (default: every weight matrix) of ``model``.

    >>> pruner = Pruner(model, scope="global", schedule=PruningSchedule(0.9, "linear", start=0, end=E - 1))
    >>> pruner.attach(optimizer)          # re-applies the masks after every optimizer.step()
    >>> for epoch in range(E):
    ...     pruner.update(epoch)          # cumulative masks to the schedule's sparsity
    ...     train_one_epoch(...)
    >>> pruner.report()["total"]["sparsity"]
    """

    def __init__(
        self,
        model: nn.Module,
        names: Iterable[str] | None = None,
        *,
        scope: Scope = "global",
        schedule: PruningSchedule | None = None,
        mask_gradients: bool = True,
    ) -> None:
        if scope not in ("global", "tensor", "gate"):
            raise ValueError(f"scope must be 'global', 'tensor' or 'gate', got {scope!r}")
        self.model, self.scope, self.schedule = model, scope, schedule
        named = dict(model.named_parameters())
        self.names = list(default_prunable(model) if names is None else names)
        unknown = [n for n in self.names if n not in named]
        if unknown:
            raise ValueError(f"cannot prune parameters the model does not have: {unknown}")
        self.gates = packed_gates(model)
        self.mask_gradients = mask_gradients
        self._hooks: list[Any] = []
        self._optimizer_hooks: list[Any] = []
        self.sparsity = 0.0

    # -- masks -----------------------------------------------------------------------------------------------------

    def _owner(self, name: str) -> tuple[nn.Module, str]:
        module_path, _, attribute = name.rpartition(".")
        return (self.model.get_submodule(module_path) if module_path else self.model), attribute

    def parameter(self, name: str) -> Tensor:
        module, attribute = self._owner(name)
        return getattr(module, attribute)

    @property
    def masks(self) -> dict[str, Tensor]:
        """Current masks (True = kept), read from the buffers beside the weights; empty before the first prune."""
        result = {}
        for name in self.names:
            module, attribute = self._owner(name)
            mask = module._buffers.get(f"{attribute}_mask")
            if mask is not None:
                result[name] = mask
        return result

    def set_masks(self, masks: Mapping[str, Tensor]) -> None:
        """Install masks (e.g. from another model for the lottery check) and apply them."""
        for name, mask in masks.items():
            if name not in self.names:
                raise ValueError(f"mask for {name!r}, which this pruner does not prune ({self.names})")
            weight = self.parameter(name)
            if tuple(mask.shape) != tuple(weight.shape):
                raise ValueError(f"mask for {name!r} has shape {tuple(mask.shape)}, the weight {tuple(weight.shape)}")
            module, attribute = self._owner(name)
            module.register_buffer(f"{attribute}_mask", mask.to(device=weight.device, dtype=torch.bool).clone())
        self._install_gradient_hooks()
        self.apply()

    def prune(self, sparsity: float) -> dict[str, Tensor]:
        """Recompute the (cumulative) masks at ``sparsity`` from the current magnitudes and apply them."""
        tensors = {name: self.parameter(name) for name in self.names}
        masks = magnitude_masks(tensors, sparsity, scope=self.scope, gates=self.gates, previous=self.masks)
        self.set_masks(masks)
        self.sparsity = _check_sparsity(sparsity)
        return masks

    def update(self, step: int) -> float:
        """Prune to the schedule's sparsity at ``step`` if that is above the current one; returns the target."""
        if self.schedule is None:
            raise ValueError("this Pruner has no schedule; call prune(sparsity) or pass schedule=PruningSchedule(...)")
        target = self.schedule.sparsity(step)
        if target > self.sparsity or (target > 0 and not self.masks):
            self.prune(target)
        return target

    # -- keeping pruned weights at zero ----------------------------------------------------------------------------

    @torch.no_grad()
    def apply(self) -> None:
        """Zero the pruned entries in place (the parameter objects, and so nn.LSTM's flat weights, are unchanged)."""
        for name, mask in self.masks.items():
            weight = self.parameter(name)
            weight.masked_fill_(~mask, 0.0)
            if weight.grad is not None:
                weight.grad.masked_fill_(~mask, 0.0)

    def _install_gradient_hooks(self) -> None:
        if not self.mask_gradients or self._hooks:
            return
        for name in self.names:
            module, attribute = self._owner(name)
            weight = getattr(module, attribute)
            if weight.requires_grad:

                def hook(grad: Tensor, module=module, attribute=attribute) -> Tensor:
                    mask = module._buffers.get(f"{attribute}_mask")
                    return grad if mask is None else grad.masked_fill(~mask, 0.0)

                self._hooks.append(weight.register_hook(hook))

    def attach(self, optimizer: torch.optim.Optimizer) -> Pruner:
        """Re-apply the masks after every ``optimizer.step()``."""
        self._optimizer_hooks.append(optimizer.register_step_post_hook(lambda *_: self.apply()))
        return self

    def detach(self) -> None:
        for handle in self._hooks + self._optimizer_hooks:
            handle.remove()
        self._hooks, self._optimizer_hooks = [], []

    def squash(self) -> dict[str, Tensor]:
        """Bake the masks into the weights, remove the mask buffers and hooks; returns the masks that were applied."""
        masks = {name: mask.clone() for name, mask in self.masks.items()}
        self.apply()
        self.detach()
        for name in masks:
            module, attribute = self._owner(name)
            del module._buffers[f"{attribute}_mask"]
        return masks

    # -- reporting -------------------------------------------------------------------------------------------------

    def report(self) -> dict[str, dict[str, float]]:
        """Achieved sparsity per tensor, measured on the weights themselves (zeros / entries), plus "total"."""
        result, zeros_total, numel_total = {}, 0, 0
        for name in self.names:
            weight = self.parameter(name).detach()
            zeros, numel = int((weight == 0).sum()), weight.numel()
            result[name] = {"numel": numel, "zeros": zeros, "sparsity": zeros / numel if numel else 0.0}
            zeros_total += zeros
            numel_total += numel
        result["total"] = {
            "numel": numel_total,
            "zeros": zeros_total,
            "sparsity": zeros_total / numel_total if numel_total else 0.0,
        }
        return result


def reinitialize(model: nn.Module, seed: int | None = None) -> nn.Module:
    """Fresh random weights: ``reset_parameters()`` on every submodule that has it (seeded when ``seed`` is given).

    Children are reset before their parents, so a model's own ``reset_parameters`` (a custom initialisation of its
    layers) has the last word.
    """
    if seed is not None:
        torch.manual_seed(seed)
    for module in reversed(list(model.modules())):
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()
    return model


def lottery_retrain(
    model: nn.Module,
    masks: Mapping[str, Tensor],
    train: Callable[[nn.Module, Pruner], Any],
    *,
    seed: int | None = None,
) -> Any:
    """The stability ("lottery") check: re-initialise ``model``, load only ``masks``, and retrain it.

    ``train(model, pruner)`` runs the same training as the original (regulariser on); it should call
    ``pruner.attach(optimizer)`` (or ``pruner.apply()`` after each step) so the pruned weights stay zero. Returns what
    ``train`` returns.
    """
    reinitialize(model, seed)
    pruner = Pruner(model, list(masks))
    pruner.set_masks(masks)
    pruner.sparsity = 1.0 - sum(int(m.sum()) for m in masks.values()) / max(1, sum(m.numel() for m in masks.values()))
    return train(model, pruner)
