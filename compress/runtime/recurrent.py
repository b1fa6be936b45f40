"""A recurrent stack (``torch.nn.LSTM``/``GRU``/``RNN`` or a predefined-sparse layer) as an inference module that runs
each weight matrix in its fastest form.

Three ways to run the whole stack, measured against each other per module at batch 1 and batch 32:

- ``native``: PyTorch's fused kernel (oneDNN on CPU, cuDNN on CUDA) on the dense-equivalent weights: the dense model;
- ``stepwise``: the input projection of all time steps as one product, then one recurrent product per step, each
  product in the form :mod:`compress.runtime.forms` chose for its tensor (dense, CSR, block);
- ``components``: a predefined-sparse layer's own formulation (k fused calls, one per component);
- ``flashrnn`` (CUDA, with the optional package): the predefined layer's block-diagonal recurrence in one fused
  kernel (compress/predefined/flashrnn_kernel.py); kept as a candidate only if its output matches the fused dense
  kernel's on the measurement input.

The fastest runs (the fused dense kernel unless another is measured at least 10% faster), so the module is never
slower than the dense one: ``native`` is always a candidate. Which is fastest depends on the sequence length: on CPU
the fused kernel reorders its weights on every call (n = 1024: ~8-12 ms, a dozen steps' worth), so it loses short
sequences and can win long ones. Each executor is therefore timed at two lengths, its cost fitted as a fixed part
plus a part per step, and every call runs the executor cheapest at its own length (:func:`by_length`).
``step(x_t, state)`` advances one time step for streaming (batch-1 serving), with the same choice between a one-step
fused call and the per-tensor forms. Gates follow PyTorch's formulas exactly (LSTM i, f, g, o; GRU r, z, n with the
reset gate applied to ``W_hn h + b_hn``).
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from compress.predefined import SparseRecurrent
from compress.runtime.forms import MARGIN, SMALL_MAX_ROWS, BlockForm, CSRForm, MatrixPlan, choose, confirm, race

_NATIVE = {"lstm": torch.lstm, "gru": torch.gru, "rnn_tanh": torch.rnn_tanh, "rnn_relu": torch.rnn_relu}
_MODES = {"LSTM": "lstm", "GRU": "gru", "RNN_TANH": "rnn_tanh", "RNN_RELU": "rnn_relu"}
_GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}
# Batches of at most this many sequences use the executor measured at batch 1.
SMALL_BATCH = 4
# Executors are raced over this many time steps, and (below) a multiple of it: the step loop's cost against the fused
# kernel's changes with the sequence length (an n = 256 layer at batch 32: the loop 15% faster over 8 steps, 20%
# slower over 16), which the fit of a fixed and a per-step cost through the two lengths follows.
MEASURE_STEPS = 8
# Each executor is also timed at this multiple of that length, to separate its fixed cost from its cost per step. At
# batch 1 the fixed cost is most of a short call (the fused kernel's weight reorder: n = 1024, one thread, ~35 ms
# against ~0.6 ms a step), so the per-step part is the difference of two close numbers: 8 and 16 steps put the
# crossover anywhere from 45 to beyond 600 steps in six loads; 4x apart narrows that. At batch 32 the steps dominate.
LONGER = {"batch1": 4, "batch32": 2}
# Sequence lengths up to which the fitted costs are compared (beyond it the last choice holds; costs are linear).
HORIZON = 4096
Segments = list[tuple[int, str]]  # (from this many steps, the executor), ascending


def by_length(timings: dict[str, dict[int, float]], default: str, horizon: int = HORIZON) -> Segments:
    """Which executor to run at each sequence length, from each one's time at two lengths.

    Each executor's cost is fitted as ``fixed + per_step * steps`` through its two points (neither part negative);
    at each length the cheapest runs, but ``default`` unless the cheapest is at least :data:`MARGIN` faster there.
    """
    models = {}
    for name, points in timings.items():
        (short, t_short), (long, t_long) = sorted(points.items())
        per_step = max((t_long - t_short) / (long - short), 0.0)
        models[name] = (max(t_short - per_step * short, 0.0), per_step)
    segments: Segments = []
    for steps in range(1, horizon + 1):
        cost = {name: fixed + per_step * steps for name, (fixed, per_step) in models.items()}
        best = min(cost, key=cost.get)
        chosen = best if cost[best] < MARGIN * cost[default] else default
        if not segments or segments[-1][1] != chosen:
            segments.append((steps, chosen))
    return segments


def segments_text(segments: Segments) -> str:
    """``[(1, "stepwise"), (41, "native")]`` as "stepwise up to 40 steps, native from 41"."""
    if len(segments) == 1:
        return segments[0][1]
    parts = [f"{name} up to {end - 1} steps" for (_, name), (end, _) in itertools.pairwise(segments)]
    return ", ".join([*parts, f"{segments[-1][1]} from {segments[-1][0]}"])


def cell_of(module: nn.Module) -> str:
    if isinstance(module, SparseRecurrent):
        return module.cell
    return _MODES[module.mode]


def _dense_weights(module: nn.Module) -> dict[str, Tensor]:
    if isinstance(module, SparseRecurrent):
        return {name: weight for name, (weight, _) in module.dense_equivalent().items()}
    if getattr(module, "proj_size", 0):
        raise ValueError("LSTM with proj_size is not supported by the runtime")
    return {name: p.detach() for name, p in module.named_parameters()}


def _block_forms(module: SparseRecurrent, layer: int, suffix: str) -> tuple[BlockForm | None, BlockForm | None]:
    layout = module.layouts[layer]
    if len(set(layout.hidden_sizes)) != 1 or layout.components == 1:
        return None, None  # components of unequal size do not stack into one batched product
    params = [module.component_parameters(layer, c, suffix) for c in range(layout.components)]
    gates = module.gates
    w_ih = BlockForm([p[0].detach() for p in params], [start for start, _ in layout.windows], gates)
    w_hh = BlockForm([p[1].detach() for p in params], list(layout.hidden_offsets), gates)
    return w_ih, w_hh


class DoubledG:
    """A predefined LSTM layer's block weights for the recurrence in component-major order, with the cell gate's
    columns doubled: ``tanh(g) = 2 sigmoid(2g) - 1``, so one sigmoid call covers all four gates and the cell update
    becomes ``c' = f c - i + 2 i sigmoid(2g)`` (multiplying by 2 is exact in floating point).

    At batch 1 the gates' element-wise calls cost as much as the block product (n = 1024, k = 8, one thread: ~35 us
    against ~62 us), and most of that is the tanh and the strided gate slices of component-major order; this form
    reads the product once into contiguous gate-major buffers and skips the tanh of g."""

    def __init__(self, w_ih: MatrixPlan, w_hh: BlockForm, bias: Tensor | None) -> None:
        self.k, self.h = w_hh.k, w_hh.h
        self.w_hh = w_hh.with_gate_scaled(2, 2.0).weight_t  # (k, h, 4h)
        block_ih = w_ih.forms.get("block")
        matches = isinstance(block_ih, BlockForm) and (block_ih.k, block_ih.h) == (self.k, self.h)
        self.w_ih = block_ih.with_gate_scaled(2, 2.0) if matches and "block" in (w_ih.small, w_ih.large) else None
        self.bias = None
        if bias is not None and self.w_ih is not None:
            self.bias = self.w_ih.component_major_bias(bias).clone()
            self.bias.view(self.k, 1, 4, self.h)[:, :, 2] *= 2

    def project(self, data: Tensor, w_ih: MatrixPlan, b_ih: Tensor | None, steps: int, batch: int) -> Tensor:
        """The input projection of ``data`` (steps * batch, in) as (steps, k, batch, 4h), the g columns doubled."""
        form = FastRecurrent._form_of(w_ih, data.shape[0])
        if self.w_ih is not None and isinstance(form, BlockForm):
            gi = self.w_ih.component_major(data, self.bias)  # (k, rows, 4h)
            return gi.view(self.k, steps, batch, -1).transpose(0, 1)
        gi_all = w_ih(data) if b_ih is None else w_ih.addmm(b_ih, data)  # a new tensor: scaled in place below
        gi = gi_all.view(steps, batch, 4, self.k, self.h).permute(0, 3, 1, 2, 4).contiguous()
        gi[..., 2, :] *= 2
        return gi.view(steps, self.k, batch, 4 * self.h)


class FastRecurrent(nn.Module):
    """Same call and return conventions as the module it replaces (time-major or batch-first, optional state,
    ``PackedSequence``, unbatched input); inference only."""

    def __init__(
        self,
        module: nn.Module,
        *,
        name: str = "rnn",
        measure: bool = True,
        force: str | None = None,
        budget_s: float = 0.01,
    ) -> None:
        super().__init__()
        self.name = name
        self.cell = cell_of(module)
        self.gates = _GATES[self.cell]
        self.input_size, self.hidden_size = module.input_size, module.hidden_size
        self.num_layers, self.bias = module.num_layers, module.bias
        self.batch_first, self.bidirectional = module.batch_first, module.bidirectional
        self.directions = 2 if module.bidirectional else 1
        self._components = module if isinstance(module, SparseRecurrent) else None
        dense = _dense_weights(module)
        suffixes = ("", "_reverse")[: self.directions]
        self.native_params = [
            dense[f"{kind}_l{layer}{suffix}"]
            for layer in range(self.num_layers)
            for suffix in suffixes
            for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")[: 4 if self.bias else 2]
        ]
        # per (layer, direction): (W_ih plan, W_hh plan, b_ih, b_hh)
        self.layers: list[list[tuple[MatrixPlan, MatrixPlan, Tensor | None, Tensor | None]]] = []
        for layer in range(self.num_layers):
            directions = []
            for suffix in suffixes:
                block_ih = block_hh = None
                if self._components is not None:
                    block_ih, block_hh = _block_forms(self._components, layer, suffix)
                key = f"l{layer}{suffix}"
                tensor_force = "dense" if force in ("native", "components") else force
                options = {"measure": measure, "force": tensor_force, "budget_s": budget_s}
                w_ih = choose(f"{name}.weight_ih_{key}", dense[f"weight_ih_{key}"], block=block_ih, **options)
                w_hh = choose(f"{name}.weight_hh_{key}", dense[f"weight_hh_{key}"], block=block_hh, **options)
                b_ih = dense.get(f"bias_ih_{key}")
                b_hh = dense.get(f"bias_hh_{key}")
                if self.cell != "gru" and b_ih is not None:
                    # LSTM and RNN add both biases to the same sum: once into the input projection, not every step
                    # (GRU's b_hn sits inside the reset gate's product and stays with W_hh)
                    b_ih, b_hh = b_ih + b_hh, None
                directions.append((w_ih, w_hh, b_ih, b_hh))
            self.layers.append(directions)
        # per (layer, direction): the LSTM recurrence in component-major order, where W_hh runs as a block form
        self.doubled: list[list[DoubledG | None]] = [
            [
                DoubledG(w_ih, w_hh.forms["block"], b_ih)
                if self.cell == "lstm" and b_hh is None and "block" in (w_hh.small, w_hh.large)
                else None
                for w_ih, w_hh, b_ih, b_hh in directions
            ]
            for directions in self.layers
        ]
        # A streaming step of an LSTM/RNN layer whose W_ih and W_hh both run as CSR at one row: [W_ih | W_hh] as one
        # CSR matrix times [x, h], bias added in the same call. MKL's sparse call has a fixed cost of tens of
        # microseconds, which at 98% sparsity is most of a product's time: one call instead of two (and no sum).
        self.fused_step: list[CSRForm | None] = [None] * self.num_layers
        if self.cell != "gru" and not self.bidirectional:
            for layer, directions in enumerate(self.layers):
                w_ih, w_hh = directions[0][:2]
                if w_ih.small == w_hh.small == "csr":
                    joined = torch.cat([dense[f"weight_ih_l{layer}"], dense[f"weight_hh_l{layer}"]], 1)
                    self.fused_step[layer] = CSRForm(joined)
        # per call kind: the executor by sequence length (the streaming step: always one step)
        self.executors: dict[str, Segments] = {label: [(1, "stepwise")] for label in ("batch1", "batch32", "step")}
        self.executor_timings_us: dict[str, Any] = {}
        self.executor_reason = ""
        if force in ("native", "components"):
            if force == "components" and self._components is None:
                force = "native"
            self.executors = {label: [(1, force)] for label in self.executors}
            if force == "components":
                self.executors["step"] = [(1, "stepwise")]
            self.executor_reason = f"forced {force}"
        elif force is not None:
            self.executor_reason = f"forced {force}: per-tensor forms"
        elif measure:
            self._measure_executors(budget_s)
        else:
            self._rule_executors()

    # -- choosing the executor ---------------------------------------------------------------------------------------

    def _all_dense(self) -> bool:
        return all(p.small == p.large == "dense" for d in self.layers for plans in d for p in plans[:2])

    def _rule_executors(self) -> None:
        if self._all_dense():
            self.executors = {label: [(1, "native")] for label in self.executors}
            self.executor_reason = "calibrated rule: every tensor dense, so the fused kernel"
        else:
            self.executor_reason = "calibrated rule: a tensor runs sparse, so per-tensor forms"

    def _measure_executors(self, budget_s: float) -> None:
        reference = self.native_params[0]
        factory = {"dtype": reference.dtype, "device": reference.device}
        steps = MEASURE_STEPS
        for label, batch in (("batch1", 1), ("batch32", 32)):
            lengths = (steps, LONGER[label] * steps)
            candidates: dict[str, Any] = {}
            for length in lengths:
                x = torch.randn(length, batch, self.input_size, **factory)
                if self.batch_first:
                    x = x.transpose(0, 1)
                candidates[f"native@{length}"] = lambda x=x: self._run_native(x, None)
                candidates[f"stepwise@{length}"] = lambda x=x: self._run(x, None)
                if self._components is not None:
                    candidates[f"components@{length}"] = lambda x=x: self._components(x)
                    if self._flashrnn_checked(x):
                        candidates[f"flashrnn@{length}"] = lambda x=x: self._run_flashrnn(x, None)
            timings = self._by_executor(race(candidates, budget_s, reference.device))
            segments = by_length(timings, "native")
            if any(name != "native" for _, name in segments):
                # a second race must agree: each other executor keeps the slower of its two times, the fused kernel
                # the faster (one burst of other work during the first race must not make the model slower)
                again = self._by_executor(race(candidates, budget_s, reference.device))
                pick = {name: min if name == "native" else max for name in timings}
                timings = {
                    name: {length: pick[name](t, again[name][length]) for length, t in points.items()}
                    for name, points in timings.items()
                }
                segments = by_length(timings, "native")
            self.executor_timings_us[label] = {
                f"{length} steps": {name: round(points[length], 1) for name, points in timings.items()}
                for length in lengths
            }
            self.executors[label] = segments
        if not self.bidirectional:
            x = torch.randn(1, self.input_size, **factory)
            state = self.initial_state(1)
            candidates = {"native": lambda: self._step_native(x, state), "stepwise": lambda: self._step(x, state)}
            timings = {k: t * 1e6 for k, t in race(candidates, budget_s, reference.device).items()}
            self.executor_timings_us["step"] = {k: round(v, 1) for k, v in timings.items()}
            self.executors["step"] = [(1, confirm(candidates, timings, "native", budget_s, reference.device))]
        long1, long32 = LONGER["batch1"] * steps, LONGER["batch32"] * steps
        self.executor_reason = (
            f"fastest at each sequence length, from times over {steps} and {long1} steps at batch 1, {steps} and "
            f"{long32} at batch 32 (a fixed cost and a cost per step), and one streaming step"
        )

    @staticmethod
    def _by_executor(seconds: dict[str, float]) -> dict[str, dict[int, float]]:
        """``{"native@8": s, ...}`` as ``{"native": {8: us, ...}, ...}``."""
        timings: dict[str, dict[int, float]] = {}
        for key, value in seconds.items():
            name, length = key.split("@")
            timings.setdefault(name, {})[int(length)] = value * 1e6
        return timings

    def executor(self, label: str, steps: int = 1) -> str:
        """The executor a call of kind ``label`` (batch1, batch32, step) runs for a sequence of ``steps``."""
        chosen = self.executors[label][0][1]
        for start, name in self.executors[label][1:]:
            if steps < start:
                break
            chosen = name
        return chosen

    def _flashrnn_checked(self, x: Tensor) -> bool:
        """flashrnn can run this layer here and gives the dense kernel's output on ``x`` (else the reason is kept)."""
        from compress.predefined import flashrnn_kernel

        if getattr(self, "flashrnn_note", None) is not None:
            return self.flashrnn_note == "matches the dense kernel"
        reason = flashrnn_kernel.unsupported_reason(self._components, x.device)
        if reason is None:
            try:
                with torch.inference_mode():
                    difference = (self._run_flashrnn(x, None)[0] - self._run_native(x, None)[0]).abs().max().item()
                reason = None if difference <= 1e-3 else f"output differs from the dense kernel by {difference:.2g}"
            except Exception as error:  # a kernel that does not build or run here is not a candidate
                reason = f"flashrnn failed here: {type(error).__name__}: {str(error)[:200]}"
        self.flashrnn_note = reason or "matches the dense kernel"
        return reason is None

    def _run_flashrnn(self, input, hx):
        module = self._components
        saved, module.formulation = module.formulation, "flashrnn"
        try:
            return module(input, hx)
        finally:
            module.formulation = saved

    def describe(self) -> dict[str, Any]:
        return {
            "module": self.name,
            "cell": self.cell,
            "executor_batch1": segments_text(self.executors["batch1"]),
            "executor_batch32": segments_text(self.executors["batch32"]),
            "executor_step": segments_text(self.executors["step"]),
            "executors_by_length": {
                label: [{"from_steps": start, "executor": name} for start, name in segments]
                for label, segments in self.executors.items()
            },
            "timings_us": self.executor_timings_us,
            "reason": self.executor_reason,
            "step_fused_layers": [layer for layer, fused in enumerate(self.fused_step) if fused is not None],
        } | ({"flashrnn": self.flashrnn_note} if getattr(self, "flashrnn_note", None) else {})

    def matrix_plans(self) -> list[MatrixPlan]:
        return [plan for directions in self.layers for plans in directions for plan in plans[:2]]

    # -- running -----------------------------------------------------------------------------------------------------

    def initial_state(self, batch: int):
        reference = self.native_params[0]
        zeros = reference.new_zeros(self.num_layers * self.directions, batch, self.hidden_size)
        return (zeros, zeros.clone()) if self.cell == "lstm" else zeros

    def _activate(self, gates: Tensor, c: Tensor | None):
        """An LSTM's or RNN's new state from its summed pre-activations (both products and both biases)."""
        if self.cell == "lstm":  # few, large element-wise calls: at batch 1 each call's overhead is the cost
            size = gates.shape[-1] // 4  # gates along the last dimension: (rows, 4n), or (k, rows, 4h) by component
            sig = torch.sigmoid(gates)  # i, f and o at once (g's sigmoid is computed and ignored)
            g = torch.tanh(gates[..., 2 * size : 3 * size])
            c = torch.addcmul(sig[..., size : 2 * size] * c, sig[..., :size], g)
            return sig[..., 3 * size :] * torch.tanh(c), c
        return (torch.tanh(gates) if self.cell == "rnn_tanh" else torch.relu(gates)), None

    def _cell(self, gi: Tensor, h: Tensor, c: Tensor | None, w_hh: MatrixPlan, b_hh: Tensor | None):
        if self.cell != "gru":  # b_hh is folded into gi (see __init__): the recurrent product adds onto gi
            return self._activate(w_hh.addmm(gi, h) if b_hh is None else gi + w_hh(h) + b_hh, c)
        gh = w_hh(h)
        if b_hh is not None:
            gh = gh + b_hh
        r_i, z_i, n_i = gi.chunk(3, 1)
        r_h, z_h, n_h = gh.chunk(3, 1)
        r = torch.sigmoid(r_i + r_h)
        z = torch.sigmoid(z_i + z_h)
        n = torch.tanh(n_i + r * n_h)
        return n + z * (h - n), None

    def _direction(self, data, batch_sizes, offsets, plans, h, c, reverse: bool, doubled: DoubledG | None = None):
        """One layer, one direction, over the packed rows ``data``; returns (outputs in row order, h, c)."""
        w_ih, w_hh, b_ih, b_hh = plans
        block = self._component_major(w_hh, b_hh, batch_sizes)
        if block is not None and doubled is not None:
            gi = doubled.project(data, w_ih, b_ih, len(batch_sizes), h.shape[0])
            return self._lstm_by_component(gi, doubled.w_hh, h, c, reverse)
        if block is not None:
            projection = self._form_of(w_ih, data.shape[0])
            if isinstance(projection, BlockForm) and (projection.k, projection.h) == (block.k, block.h):
                gi = projection.component_major(data, b_ih)  # (k, rows, G*h): already in the recurrence's order
                gi = gi.view(block.k, len(batch_sizes), h.shape[0], -1).transpose(0, 1)
            else:
                gi_all = w_ih(data) if b_ih is None else w_ih.addmm(b_ih, data)
                gi = self._to_component_major(gi_all, block, len(batch_sizes), h.shape[0])
            return self._direction_by_component(gi, block, h, c, reverse)
        gi_all = w_ih(data) if b_ih is None else w_ih.addmm(b_ih, data)
        outputs: list[Tensor | None] = [None] * len(batch_sizes)
        steps = range(len(batch_sizes) - 1, -1, -1) if reverse else range(len(batch_sizes))
        full = h.shape[0]
        for t in steps:
            b = batch_sizes[t]
            gi = gi_all[offsets[t] : offsets[t] + b]
            if b == full:
                h, c = self._cell(gi, h, c, w_hh, b_hh)
                outputs[t] = h
            else:  # a packed batch: only the first b (longest) sequences are still running at step t
                new_h, new_c = self._cell(gi, h[:b], None if c is None else c[:b], w_hh, b_hh)
                outputs[t] = new_h
                h = torch.cat([new_h, h[b:]])
                c = None if c is None else torch.cat([new_c, c[b:]])
        return torch.cat(outputs), h, c

    def _component_major(self, w_hh: MatrixPlan, b_hh: Tensor | None, batch_sizes: list[int]) -> BlockForm | None:
        """W_hh's block form, when this direction's recurrence can run in the components' own order: an LSTM or RNN
        (GRU's reset gate needs W_hn h on its own), its block form chosen for this batch, no sequence ending early."""
        form = self._form_of(w_hh, batch_sizes[0])
        if not isinstance(form, BlockForm) or self.cell == "gru" or b_hh is not None or len(set(batch_sizes)) != 1:
            return None
        return form

    @staticmethod
    def _form_of(plan: MatrixPlan, rows: int):
        return plan.forms[plan.small if rows <= SMALL_MAX_ROWS else plan.large]

    def _to_component_major(self, gi_all: Tensor, block: BlockForm, steps: int, batch: int) -> Tensor:
        """An input projection in PyTorch's order (steps * batch, G*H) as (steps, k, batch, G*h) [c][g][j]."""
        k, size, gates = block.k, block.h, self.gates
        return gi_all.view(steps, batch, gates, k, size).permute(0, 3, 1, 2, 4).reshape(steps, k, batch, gates * size)

    def _direction_by_component(self, gi: Tensor, block: BlockForm, h, c, reverse: bool):
        """The recurrence of a block-diagonal W_hh kept in component-major order [c][g][j] from the first step to the
        last: the input projection ``gi`` (steps, k, batch, G*h) comes in that order (straight from a block W_ih's
        batched product, or reordered once), each step is one batched product that adds onto it (``baddbmm``), and
        the outputs go back to PyTorch's order once at the end, instead of a reorder and a sum at every step."""
        k, size = block.k, block.h
        steps, batch = gi.shape[0], h.shape[0]

        def by_component(state: Tensor) -> Tensor:
            return state.view(batch, k, size).transpose(0, 1).contiguous()  # (k, batch, h)

        def back(state: Tensor) -> Tensor:
            return state.transpose(0, 1).reshape(batch, k * size)

        h_c, c_c = by_component(h), None if c is None else by_component(c)
        outputs: list[Tensor | None] = [None] * steps
        inputs = gi.unbind(0)  # the steps' views in one call
        for t in range(steps - 1, -1, -1) if reverse else range(steps):
            h_c, c_c = self._activate(torch.baddbmm(inputs[t], h_c, block.weight_t), c_c)
            outputs[t] = h_c
        out = torch.stack(outputs).permute(0, 2, 1, 3).reshape(steps * batch, k * size)
        return out, back(h_c), None if c_c is None else back(c_c)

    @staticmethod
    def _lstm_by_component(gi: Tensor, weight: Tensor, h: Tensor, c: Tensor, reverse: bool):
        """An LSTM recurrence in component-major order with the g columns doubled (:class:`DoubledG`): ``gi``
        (steps, k, batch, 4h), ``weight`` (k, h, 4h). Each step is seven calls on buffers allocated once: the
        product onto the input projection, one sigmoid that reads it into gate-major order (i, f, g, o each
        contiguous), three for the cell and two for the output, written straight into the output sequence."""
        steps, k, batch, size = gi.shape[0], weight.shape[0], h.shape[0], weight.shape[2] // 4
        h_c = h.reshape(batch, k, size).transpose(0, 1)  # (k, batch, h): read only
        c_c = c.reshape(batch, k, size).transpose(0, 1)
        pre = gi.new_empty(k, batch, 4 * size)
        gates = pre.view(k, batch, 4, size).permute(2, 0, 1, 3)
        activated = gi.new_empty(4, k, batch, size)
        i, f, g, o = activated.unbind(0)
        cell, tanh_c = gi.new_empty(k, batch, size), gi.new_empty(k, batch, size)
        out = gi.new_empty(steps, k, batch, size)
        outputs, inputs = out.unbind(0), gi.unbind(0)
        for t in range(steps - 1, -1, -1) if reverse else range(steps):
            torch.baddbmm(inputs[t], h_c, weight, out=pre)
            torch.sigmoid(gates, out=activated)
            torch.mul(f, c_c, out=cell)  # after the first step c_c is cell: an in-place update
            c_c = cell.sub_(i).addcmul_(i, g, value=2)  # f c + i (2 sigmoid(2g) - 1)
            torch.tanh(c_c, out=tanh_c)
            h_c = torch.mul(o, tanh_c, out=outputs[t])
        full = k * size
        return (
            out.permute(0, 2, 1, 3).reshape(steps * batch, full),
            h_c.transpose(0, 1).reshape(batch, full),
            c_c.transpose(0, 1).reshape(batch, full),
        )

    def _run_packed(self, data: Tensor, batch_sizes: list[int], states: list[Tensor]):
        offsets = [0]
        for b in batch_sizes[:-1]:
            offsets.append(offsets[-1] + b)
        h0 = states[0]
        c0 = states[1] if self.cell == "lstm" else None
        finals_h, finals_c = [], []
        layer_input = data
        for layer, directions in enumerate(self.layers):
            outs = []
            for d, plans in enumerate(directions):
                index = layer * self.directions + d
                out, h, c = self._direction(
                    layer_input,
                    batch_sizes,
                    offsets,
                    plans,
                    h0[index],
                    None if c0 is None else c0[index],
                    d == 1,
                    self.doubled[layer][d],
                )
                outs.append(out)
                finals_h.append(h)
                finals_c.append(c)
            layer_input = outs[0] if len(outs) == 1 else torch.cat(outs, 1)
        h_n = torch.stack(finals_h)
        return layer_input, ([h_n, torch.stack(finals_c)] if self.cell == "lstm" else [h_n])

    def _prepare(self, input, hx):
        """(data, batch sizes, states, how to rebuild the output) in PyTorch's conventions."""
        if isinstance(input, PackedSequence):
            data, batch_sizes, sorted_indices, unsorted_indices = input
            sizes = batch_sizes.tolist()
            batch = sizes[0]
            kind = ("packed", batch_sizes, sorted_indices, unsorted_indices)
        else:
            unbatched = input.dim() == 2
            x = input.unsqueeze(1 if not self.batch_first else 0) if unbatched else input
            if self.batch_first:
                x = x.transpose(0, 1)
            steps, batch = x.shape[0], x.shape[1]
            data, sizes = x.reshape(steps * batch, x.shape[2]), [batch] * steps
            sorted_indices = unsorted_indices = None
            kind = ("padded", steps, batch, unbatched)
        if hx is None:
            states = list(self.initial_state(batch)) if self.cell == "lstm" else [self.initial_state(batch)]
        else:
            states = list(hx) if self.cell == "lstm" else [hx]
            if kind[0] == "padded" and kind[3]:
                states = [s.unsqueeze(1) for s in states]
            if sorted_indices is not None:
                states = [s.index_select(1, sorted_indices) for s in states]
        return data, sizes, states, kind

    def _finish(self, output: Tensor, states: list[Tensor], kind):
        if kind[0] == "packed":
            _, batch_sizes, sorted_indices, unsorted_indices = kind
            if unsorted_indices is not None:
                states = [s.index_select(1, unsorted_indices) for s in states]
            result = PackedSequence(output, batch_sizes, sorted_indices, unsorted_indices)
        else:
            _, steps, batch, unbatched = kind
            result = output.view(steps, batch, -1)
            if self.batch_first:
                result = result.transpose(0, 1)
            if unbatched:
                result = result.squeeze(1 if not self.batch_first else 0)
                states = [s.squeeze(1) for s in states]
        return result, (tuple(states) if self.cell == "lstm" else states[0])

    def _run(self, input, hx):
        data, sizes, states, kind = self._prepare(input, hx)
        output, finals = self._run_packed(data, sizes, states)
        return self._finish(output, finals, kind)

    def _run_native(self, input, hx):
        fn = _NATIVE[self.cell]
        if isinstance(input, PackedSequence):
            data, batch_sizes = input.data, input.batch_sizes
            _, _, states, kind = self._prepare(input, hx)
            hx_native = tuple(states) if self.cell == "lstm" else states[0]
            result = fn(data, batch_sizes, hx_native, self.native_params, self.bias, self.num_layers, 0.0, False,
                        self.bidirectional)  # fmt: skip
            return self._finish(result[0], list(result[1:]), kind)
        unbatched = input.dim() == 2
        x = input.unsqueeze(1 if not self.batch_first else 0) if unbatched else input
        batch = x.shape[0 if self.batch_first else 1]
        if hx is None:
            hx = self.initial_state(batch)
        elif unbatched:
            hx = tuple(s.unsqueeze(1) for s in hx) if self.cell == "lstm" else hx.unsqueeze(1)
        result = fn(x, hx, self.native_params, self.bias, self.num_layers, 0.0, False, self.bidirectional,
                    self.batch_first)  # fmt: skip
        output, states = result[0], result[1:]
        if unbatched:
            output = output.squeeze(1 if not self.batch_first else 0)
            states = tuple(s.squeeze(1) for s in states)
        return output, (tuple(states) if self.cell == "lstm" else states[0])

    def forward(self, input, hx=None):
        if isinstance(input, PackedSequence):
            batch, steps = int(input.batch_sizes[0]), len(input.batch_sizes)
        elif input.dim() == 2:
            batch, steps = 1, input.shape[0]
        else:
            batch, steps = input.shape[0 if self.batch_first else 1], input.shape[1 if self.batch_first else 0]
        executor = self.executor("batch1" if batch <= SMALL_BATCH else "batch32", steps)
        with torch.inference_mode():
            if executor == "native":
                return self._run_native(input, hx)
            if executor == "components":
                return self._components(input, hx)
            if executor == "flashrnn" and not isinstance(input, PackedSequence):
                return self._run_flashrnn(input, hx)
            return self._run(input, hx)

    # -- streaming ---------------------------------------------------------------------------------------------------

    def _step(self, x: Tensor, state):
        states = list(state) if self.cell == "lstm" else [state]
        h_all, c_all = states[0], states[1] if self.cell == "lstm" else None
        new_h, new_c = [], []
        layer_input = x
        for layer, directions in enumerate(self.layers):
            w_ih, w_hh, b_ih, b_hh = directions[0]
            h_prev, c_prev = h_all[layer], None if c_all is None else c_all[layer]
            fused, doubled, rows = self.fused_step[layer], self.doubled[layer][0], layer_input.shape[0]
            if fused is not None and rows <= SMALL_MAX_ROWS:
                joined = torch.cat([layer_input, h_prev], 1)
                h, c = self._activate(fused(joined) if b_ih is None else fused.addmm(b_ih, joined), c_prev)
            elif doubled is not None and isinstance(self._form_of(w_hh, rows), BlockForm):
                gi = doubled.project(layer_input, w_ih, b_ih, 1, rows)
                _, h, c = self._lstm_by_component(gi, doubled.w_hh, h_prev, c_prev, False)
            else:
                gi = w_ih(layer_input) if b_ih is None else w_ih.addmm(b_ih, layer_input)
                h, c = self._cell(gi, h_prev, c_prev, w_hh, b_hh)
            new_h.append(h)
            new_c.append(c)
            layer_input = h
        h_n = torch.stack(new_h)
        return layer_input, ((h_n, torch.stack(new_c)) if self.cell == "lstm" else h_n)

    def _step_native(self, x: Tensor, state):
        result = _NATIVE[self.cell](
            x.unsqueeze(0), state, self.native_params, self.bias, self.num_layers, 0.0, False, False, False
        )
        return result[0][0], (tuple(result[1:]) if self.cell == "lstm" else result[1])

    def step(self, x_t: Tensor, state=None):
        """One time step: ``x_t`` (batch, input_size) -> (output (batch, hidden_size), new state)."""
        if self.bidirectional:
            raise ValueError(f"{self.name} is bidirectional: it needs the whole sequence and cannot run step by step")
        if state is None:
            state = self.initial_state(x_t.shape[0])
        with torch.inference_mode():
            if self.executor("step") == "native":
                return self._step_native(x_t, state)
            return self._step(x_t, state)
