"""The forms one weight matrix can run in, and the short measurement that picks one.

Every form computes the same product ``x @ W.T`` for ``x`` of shape (rows, in) and returns (rows, out) in PyTorch's
layout (for recurrent weights: gates packed [gate][hidden], as ``torch.nn.LSTM`` holds them):

- ``dense``: one ``torch.addmm`` on the dense-equivalent matrix (zeros included);
- ``csr``: ``torch.sparse_csr`` times a dense block: pays only for the non-zeros, but with an index per entry and
  worse memory access, so it wins only when the matrix is large and very sparse (issue 13: 3.3x faster at n = 1024,
  95%, one row; 2-5x slower at n = 256);
- ``block``: a predefined-sparse layer's k components as one batched matrix product (``torch.bmm``), each component
  reading its own input window (block-diagonal W_hh, banded W_ih); needs components of equal size.

Which form is fastest depends on the matrix, the number of rows and the machine, so :func:`choose` measures every
candidate at one row (streaming, batch-1 serving) and at 32 rows (batched sequences), and keeps the fastest of each:
never slower than dense, because dense is always a candidate.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

# Rows at which each tensor is measured: one (a streaming step at batch 1) and 32 (a batch of sequences).
SMALL_ROWS, LARGE_ROWS = 1, 32
# A product with at most this many rows uses the form chosen at SMALL_ROWS.
SMALL_MAX_ROWS = 4
# Another form replaces the dense one only when measured at least this much faster (time ratio): short timings on a
# busy machine scatter by ~10%, and a wrong pick must not make the model slower than dense.
MARGIN = 0.9
# Below this sparsity a CSR product is never measured: its index costs more than the zeros it skips.
CSR_MIN_SPARSITY = 0.5


class DenseForm:
    name = "dense"

    def __init__(self, weight: Tensor) -> None:
        self.weight_t = weight.t().contiguous()  # (in, out): addmm reads it row by row

    def __call__(self, x: Tensor) -> Tensor:
        return x @ self.weight_t

    def addmm(self, acc: Tensor, x: Tensor) -> Tensor:
        return torch.addmm(acc, x, self.weight_t)


class CSRForm:
    """CSR with 32-bit indices: with them PyTorch's CPU build hands the product to MKL's sparse BLAS, 2-3x faster than
    with the default 64-bit ones (n = 1024 LSTM gates, one thread); one row runs as a matrix-vector product."""

    name = "csr"

    def __init__(self, weight: Tensor) -> None:
        with warnings.catch_warnings():  # "sparse CSR support is in beta": known, and measured before use
            warnings.simplefilter("ignore", UserWarning)
            csr = weight.to_sparse_csr()
            self.weight = torch.sparse_csr_tensor(
                csr.crow_indices().int(), csr.col_indices().int(), csr.values(), csr.shape
            )

    def __call__(self, x: Tensor) -> Tensor:
        if x.shape[0] == 1:
            return torch.mv(self.weight, x[0]).unsqueeze(0)
        return (self.weight @ x.t()).t()

    def addmm(self, acc: Tensor, x: Tensor) -> Tensor:
        """``acc + x @ W.T``: at one row a single ``addmv`` (MKL's sparse call costs tens of microseconds whatever
        its size, so the sum rides along instead of being one more call)."""
        if x.shape[0] == 1 and (acc.dim() == 1 or acc.shape[0] == 1):
            return torch.addmv(acc.reshape(-1), self.weight, x[0]).unsqueeze(0)
        return self(x) + acc


class BlockForm:
    """k dense (out_c, L) blocks; block c reads input columns ``starts[c] .. starts[c] + L`` and writes the rows of
    component c, gate by gate: row g*H + c*h + j of the full matrix is row g*h + j of block c."""

    name = "block"

    def __init__(self, blocks: list[Tensor], starts: list[int], gates: int) -> None:
        self.k, self.gates = len(blocks), gates
        self.length = blocks[0].shape[1]
        self.h = blocks[0].shape[0] // gates
        self.weight_t = torch.stack([b.t() for b in blocks]).contiguous()  # (k, L, G*h)
        contiguous = all(s == c * self.length for c, s in enumerate(starts))
        device = blocks[0].device  # on the weights' device once, not copied there on every product
        windows = [list(range(s, s + self.length)) for s in starts]
        self.index = None if contiguous else torch.tensor(windows, device=device)

    def _windows(self, x: Tensor) -> Tensor:
        """Each component's input columns, (k, rows, L)."""
        if self.index is None:  # the windows tile the input exactly (W_hh, or W_ih with delta = 1/k)
            return x.view(x.shape[0], self.k, self.length).transpose(0, 1)
        return x[:, self.index].transpose(0, 1)

    def __call__(self, x: Tensor) -> Tensor:
        rows = x.shape[0]
        out = torch.bmm(self._windows(x), self.weight_t)  # (k, rows, G*h)
        # component-major [c][g][j] -> PyTorch's gate-major [g][c][j]
        return out.view(self.k, rows, self.gates, self.h).permute(1, 2, 0, 3).reshape(rows, -1)

    def addmm(self, acc: Tensor, x: Tensor) -> Tensor:
        return self(x) + acc

    def with_gate_scaled(self, gate: int, factor: float) -> BlockForm:
        """The same product with gate ``gate``'s output columns multiplied by ``factor`` (a copy of the weights)."""
        scaled = copy.copy(self)
        weight = self.weight_t.clone().view(self.k, self.length, self.gates, self.h)
        weight[:, :, gate] *= factor
        scaled.weight_t = weight.view(self.k, self.length, self.gates * self.h)
        return scaled

    def component_major_bias(self, bias: Tensor) -> Tensor:
        """A bias in PyTorch's order (G*H) as (k, 1, G*h), the order of :meth:`component_major`'s output."""
        return bias.view(self.gates, self.k, self.h).transpose(0, 1).reshape(self.k, 1, self.gates * self.h)

    def component_major(self, x: Tensor, bias: Tensor | None) -> Tensor:
        """``x @ W.T + bias`` left in the components' own order, (k, rows, G*h) [c][g][j], for a recurrence that runs
        by component: one ``baddbmm`` with the bias reordered to match, instead of the product, a reorder to
        PyTorch's order, a sum, and a reorder back."""
        if bias is None:
            return torch.bmm(self._windows(x), self.weight_t)
        if bias.dim() == 1:
            bias = self.component_major_bias(bias)
        return torch.baddbmm(bias, self._windows(x), self.weight_t)


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so that a wall-clock timing measures the kernels and not their launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def race(candidates: dict[str, Callable[[], Any]], budget_s: float, device: torch.device) -> dict[str, float]:
    """Seconds per call of each candidate: the minimum over rounds in which every candidate runs once in turn.

    Interleaving and the minimum make the comparison robust on a shared machine: a burst of other work slows all
    candidates of a round alike, and noise only ever adds time.
    """
    best = dict.fromkeys(candidates, float("inf"))
    with torch.inference_mode():
        for fn in candidates.values():  # warm-up: first calls allocate and pick kernels
            fn()
        sync(device)
        deadline = time.perf_counter() + budget_s
        rounds = 0
        while rounds < 3 or (time.perf_counter() < deadline and rounds < 200):
            for name, fn in candidates.items():
                start = time.perf_counter()
                fn()
                sync(device)
                best[name] = min(best[name], time.perf_counter() - start)
            rounds += 1
    return best


def prefer(timings: dict[str, float], default: str) -> str:
    """The fastest candidate, but ``default`` unless the fastest beats it by :data:`MARGIN`."""
    best = min(timings, key=timings.get)
    return best if timings[best] < MARGIN * timings[default] else default


def confirm(
    candidates: dict[str, Callable[[], Any]], timings: dict[str, float], default: str, budget_s: float, device
) -> str:
    """:func:`prefer`, and a winner other than ``default`` must win a second race against it alone: one burst of
    other work during the first race must not make the model slower than dense."""
    best = prefer(timings, default)
    if best == default:
        return default
    again = race({best: candidates[best], default: candidates[default]}, budget_s, device)
    return best if again[best] < MARGIN * again[default] else default


@dataclass
class MatrixPlan:
    """How one tensor runs: the form used at few rows and at many, and what was measured (microseconds)."""

    name: str
    shape: tuple[int, int]
    sparsity: float
    forms: dict[str, Any]  # form name -> form object
    small: str = "dense"
    large: str = "dense"
    timings_us: dict[str, dict[str, float]] = field(default_factory=dict)
    reason: str = ""

    def __call__(self, x: Tensor) -> Tensor:
        return self.forms[self.small if x.shape[0] <= SMALL_MAX_ROWS else self.large](x)

    def addmm(self, acc: Tensor, x: Tensor) -> Tensor:
        """``acc + x @ W.T`` in the chosen form, the sum fused into the product where the form can."""
        return self.forms[self.small if x.shape[0] <= SMALL_MAX_ROWS else self.large].addmm(acc, x)

    def describe(self) -> dict[str, Any]:
        return {
            "tensor": self.name,
            "shape": list(self.shape),
            "sparsity": round(self.sparsity, 4),
            "form_batch1": self.small,
            "form_batch32": self.large,
            "timings_us": self.timings_us,
            "reason": self.reason,
        }


def choose(
    name: str,
    weight: Tensor,
    *,
    block: BlockForm | None = None,
    measure: bool = True,
    force: str | None = None,
    budget_s: float = 0.01,
) -> MatrixPlan:
    """Build the candidate forms of ``weight`` (out, in) and pick the fastest at 1 and at 32 rows.

    ``measure=False`` uses the calibrated rule instead (CSR from 95% sparsity when the matrix has at least 2^18
    entries, the block form when there is one); ``force`` runs every product in one form (tests use it).
    """
    weight = weight.detach()
    sparsity = 1 - int((weight != 0).sum()) / max(weight.numel(), 1)
    forms: dict[str, Any] = {"dense": DenseForm(weight)}
    if sparsity >= CSR_MIN_SPARSITY or force == "csr":
        forms["csr"] = CSRForm(weight)
    if block is not None:
        forms["block"] = block
    plan = MatrixPlan(name, tuple(weight.shape), sparsity, forms)
    if force is not None:
        chosen = force if force in forms else "dense"
        plan.small = plan.large = chosen
        plan.reason = f"forced {force}" + ("" if chosen == force else f" (not available here: {chosen})")
        return plan
    if not measure:
        rule = "block" if "block" in forms else "csr" if sparsity >= 0.95 and weight.numel() >= 1 << 18 else "dense"
        plan.small = plan.large = rule
        plan.reason = "calibrated rule (no measurement): block if predefined, CSR from 95% sparsity and 2^18 entries"
        return plan
    if len(forms) == 1:
        plan.reason = f"dense: {sparsity:.0%} sparse, below the {CSR_MIN_SPARSITY:.0%} where CSR is worth measuring"
        return plan
    for label, rows in (("batch1", SMALL_ROWS), ("batch32", LARGE_ROWS)):
        x = torch.randn(rows, weight.shape[1], dtype=weight.dtype, device=weight.device)
        calls = {form: (lambda fn=fn, x=x: fn(x)) for form, fn in forms.items()}
        timings = {form: t * 1e6 for form, t in race(calls, budget_s, weight.device).items()}
        plan.timings_us[label] = {form: round(t, 2) for form, t in timings.items()}
        best = confirm(calls, timings, "dense", budget_s, weight.device)
        if label == "batch1":
            plan.small = best
        else:
            plan.large = best
    plan.reason = "fastest measured at 1 and 32 rows"
    return plan
