"""Unstructured magnitude pruning with masks kept beside the weights (the moduli paper's, Mackey et al., 2024, with
this project's allocations and floors).

- :func:`allocate_masks`: how many weights each tensor keeps (``allocation``) and which (smallest |w| pruned first):
  "global" (one threshold over every tensor: the moduli paper's), "uniform" (each tensor to the target) or "erk"
  (RigL's Erdős–Rényi-Kernel: density proportional to (n_in + n_out) / (n_in * n_out), scaled to the target).
  **Floors** (on by default): every output unit (row) keeps its largest input and every input feature (column) its
  largest output, and ``min_density`` keeps at least that share of each tensor - so no tensor is pruned away whatever
  the allocation. A tensor that needed its floor is reported in :attr:`Pruner.at_floor`.
- :class:`Pruner`: holds a boolean mask per parameter as a buffer on the parameter's module (``<name>_mask``, so it
  travels with ``state_dict``), re-applies it in place after every optimizer step and zeroes the masked gradients, so
  pruned weights stay exactly zero under Adam/AdamW (whose moment estimates would otherwise move them again).
  The weights are written in place and never re-parametrised: ``torch.nn.utils.prune`` replaces an LSTM's
  ``weight_hh_l0`` by a computed tensor, which breaks the flat weight buffer that cuDNN/oneDNN kernels use; here
  ``nn.LSTM`` keeps its own parameters and kernels.
- ``per_gate`` (uniform and erk): each gate block of a packed LSTM/GRU tensor gets its share of the tensor's budget,
  so no gate is stripped bare. The older ``scope`` argument maps onto these: "global" = global, "tensor" = uniform,
  "gate" = uniform per gate.
- :func:`prunable_names`: which tensors are pruned (``targets``): "recurrent" (every W_hh), "recurrent_and_input"
  (W_hh and W_ih) or "all" (every weight matrix: embedding, encoder, W_ih, W_hh, decoder).
- Schedules (:class:`PruningSchedule`): one-shot, linear (the paper) and cubic (Zhu & Gupta 2017); each reaches its
  final sparsity exactly at its last step. Masks are cumulative: a pruned weight never comes back.
- ``squash()`` bakes the masks into the weights and removes buffers and hooks; ``report()`` gives achieved sparsity;
  ``lottery_retrain`` re-initialises a model, loads only the masks, and retrains it with your training function.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from compress.predefined.layout import gate_count
from compress.predefined.recurrent import SparseRecurrent

Scope = Literal["global", "tensor", "gate"]
Allocation = Literal["global", "uniform", "erk"]
Targets = Literal["recurrent", "recurrent_and_input", "all"]
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


def erk_densities(shapes: Mapping[str, Sequence[int]], density: float) -> dict[str, float]:
    """Erdős–Rényi-Kernel densities (Evci et al. 2020): tensor t keeps density eps * sum(shape_t) / prod(shape_t),
    with eps chosen so that the kept entries total ``density`` of all entries; a tensor whose density would exceed 1
    is kept dense and eps is solved again for the rest."""
    if not 0 <= density <= 1:
        raise ValueError(f"density must be in [0, 1], got {density}")
    numel = {name: math.prod(shape) for name, shape in shapes.items()}
    raw = {name: sum(shape) / numel[name] for name, shape in shapes.items() if numel[name]}
    dense: set[str] = set()
    while True:
        budget = density * sum(numel.values()) - sum(numel[n] for n in dense)
        weighted = sum(raw[n] * numel[n] for n in raw if n not in dense)
        eps = budget / weighted if weighted else 0.0
        over = {n for n in raw if n not in dense and eps * raw[n] > 1}
        if not over:
            break
        dense |= over
    return {name: 1.0 if name in dense else min(1.0, eps * raw.get(name, 0.0)) for name in shapes}


def floor_mask(scores: Tensor) -> Tensor:
    """The entries a 2-D (or higher) tensor keeps whatever the allocation: the best-scoring entry of every row (each
    output unit keeps an input) and of every column (each input feature keeps an output). ``scores`` are magnitudes
    with already-pruned entries below every magnitude, so a floor never revives a pruned weight unless a row or column
    has nothing left, in which case its best entry comes back."""
    if scores.dim() < 2:
        return torch.ones_like(scores, dtype=torch.bool)
    matrix = scores.reshape(scores.size(0), -1)
    keep = torch.zeros_like(matrix, dtype=torch.bool)
    keep[torch.arange(matrix.size(0), device=matrix.device), matrix.argmax(dim=1)] = True
    keep[matrix.argmax(dim=0), torch.arange(matrix.size(1), device=matrix.device)] = True
    return keep.view(scores.shape)


def _top(scores: Tensor, forced: Tensor, keep: int) -> Tensor:
    """Flat mask: the ``forced`` entries plus the best-scoring others, ``max(keep, forced)`` entries in all."""
    flat_scores, flat_forced = scores.flatten(), forced.flatten()
    mask = flat_forced.clone()
    extra = keep - int(flat_forced.sum())
    if extra > 0:
        candidates = flat_scores.masked_fill(flat_forced, -math.inf)
        mask[torch.topk(candidates, extra, sorted=False).indices] = True
    return mask.view(scores.shape)


@dataclass
class Allocated:
    """What :func:`allocate_masks` decided: the masks, and the tensors whose floor kept more than their share."""

    masks: dict[str, Tensor]
    at_floor: set[str]


def allocate_masks(
    tensors: Mapping[str, Tensor],
    sparsity: float,
    *,
    allocation: Allocation = "global",
    floors: bool = True,
    min_density: float = 0.0,
    gates: Mapping[str, int] | None = None,
    per_gate: bool = True,
    previous: Mapping[str, Tensor] | None = None,
) -> Allocated:
    """Masks (True = kept) pruning about ``sparsity`` of all entries of ``tensors`` together, smallest |w| first.

    With ``previous`` masks, entries already pruned stay pruned (cumulative pruning): each tensor keeps at most what
    it kept before. Floors and ``min_density`` may keep more than the target asks (reported in ``at_floor``).
    """
    _check_sparsity(sparsity)
    if allocation not in ("global", "uniform", "erk"):
        raise ValueError(f"allocation must be 'global', 'uniform' or 'erk', got {allocation!r}")
    if not 0 <= min_density <= 1:
        raise ValueError(f"min_density must be in [0, 1], got {min_density}")
    previous, gates = previous or {}, gates or {}
    scores = {name: _scores(t, previous.get(name)).view(t.shape) for name, t in tensors.items()}
    was_kept = {name: int(previous[name].sum()) if name in previous else t.numel() for name, t in tensors.items()}
    forced = {}
    for name, score in scores.items():
        must = floor_mask(score) if floors else torch.zeros_like(score, dtype=torch.bool)
        least = math.ceil(min_density * score.numel())
        if least:
            must = _top(score, must, least)
        forced[name] = must
    if allocation == "global":
        wanted = _global_budget(scores, forced, sparsity, was_kept)
    else:
        density = 1 - sparsity
        if allocation == "erk":
            densities = erk_densities({n: tuple(t.shape) for n, t in tensors.items()}, density)
        else:
            densities = dict.fromkeys(tensors, density)
        wanted = {n: min(was_kept[n], _kept_count(densities[n], t.numel())) for n, t in tensors.items()}
    masks, at_floor = {}, set()
    for name, tensor in tensors.items():
        count = gates.get(name, 1) if per_gate and allocation != "global" else 1
        if count > 1 and tensor.size(0) % count == 0:  # each gate block to the tensor's density, on its own
            parts = []
            for score, must in zip(scores[name].chunk(count), forced[name].chunk(count), strict=True):
                alive = int((score >= 0).sum())  # pruned entries score -1
                share = min(alive, _kept_count(densities[name], score.numel()))
                at_floor.update([name] if int(must.sum()) > share else [])
                parts.append(_top(score, must, share))
            mask = torch.cat(parts)
        else:
            if int(forced[name].sum()) > wanted[name]:
                at_floor.add(name)
            mask = _top(scores[name], forced[name], wanted[name])
        masks[name] = mask.to(tensor.device)
    return Allocated(masks, at_floor)


def _kept_count(density: float, numel: int) -> int:
    # The pruned count is what is rounded (as in magnitude_masks), so "50% of 9" prunes 4 and keeps 5.
    return numel - round((1 - density) * numel)


def _global_budget(
    scores: Mapping[str, Tensor], forced: Mapping[str, Tensor], sparsity: float, was_kept: Mapping[str, int]
) -> dict[str, int]:
    """Per-tensor keep counts of one global threshold: the forced entries first, then the best others overall."""
    names = list(scores)
    total = sum(s.numel() for s in scores.values())
    keep = min(sum(was_kept.values()), _kept_count(1 - sparsity, total))
    need = {n: int(forced[n].sum()) for n in names}
    extra = keep - sum(need.values())
    wanted = dict(need)
    if extra > 0:
        others = torch.cat([scores[n].flatten().masked_fill(forced[n].flatten(), -math.inf) for n in names])
        chosen = torch.zeros(others.numel(), dtype=torch.bool, device=others.device)
        chosen[torch.topk(others, extra, sorted=False).indices] = True
        start = 0
        for name in names:
            numel = scores[name].numel()
            wanted[name] += int(chosen[start : start + numel].sum())
            start += numel
    return wanted


def prunable_names(model: nn.Module, targets: Targets = "all") -> list[str]:
    """The weight matrices ``targets`` names: "recurrent" (W_hh, and LSTM projections), "recurrent_and_input" (also
    W_ih), "all" (every parameter with >= 2 dimensions: embeddings, encoders, W_ih, W_hh, decoders)."""
    if targets not in ("recurrent", "recurrent_and_input", "all"):
        raise ValueError(f"targets must be 'recurrent', 'recurrent_and_input' or 'all', got {targets!r}")
    matrices = [name for name, p in model.named_parameters() if p.dim() >= 2]
    if targets == "all":
        return matrices
    kinds = ("weight_hh", "weight_hr") + (("weight_ih",) if targets == "recurrent_and_input" else ())
    return [name for name in matrices if name.rpartition(".")[2].startswith(kinds)]


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
        scope: Scope | None = None,
        schedule: PruningSchedule | None = None,
        mask_gradients: bool = True,
        allocation: Allocation = "global",
        floors: bool = False,
        min_density: float = 0.0,
        per_gate: bool = True,
    ) -> None:
        """``scope`` (older name) overrides ``allocation``/``per_gate``: "global", "tensor" (uniform, whole tensors)
        or "gate" (uniform per gate block). Floors are off here (the plain magnitude pruner of the papers); the
        recipe's methods turn them on (compress.methods)."""
        if scope is not None:
            if scope not in ("global", "tensor", "gate"):
                raise ValueError(f"scope must be 'global', 'tensor' or 'gate', got {scope!r}")
            allocation = "global" if scope == "global" else "uniform"
            per_gate = scope == "gate"
        if allocation not in ("global", "uniform", "erk"):
            raise ValueError(f"allocation must be 'global', 'uniform' or 'erk', got {allocation!r}")
        self.model, self.schedule = model, schedule
        self.allocation, self.floors, self.min_density, self.per_gate = allocation, floors, min_density, per_gate
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
        self.at_floor: set[str] = set()

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
        allocated = allocate_masks(
            tensors,
            sparsity,
            allocation=self.allocation,
            floors=self.floors,
            min_density=self.min_density,
            gates=self.gates,
            per_gate=self.per_gate,
            previous=self.masks,
        )
        masks, self.at_floor = allocated.masks, allocated.at_floor
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
