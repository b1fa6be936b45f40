"""Predefined-sparse recurrent layers: k small dense RNN/LSTM/GRU layers side by side
(Demeester et al., "Predefined Sparseness in Recurrent Sequence Models", CoNLL 2018: recurrent layers).

The layers take the same arguments and follow the same call and return conventions as ``torch.nn.LSTM``/``GRU``/``RNN``
(time-major or batch-first, unbatched input, optional initial state, ``PackedSequence``), so they drop into existing
models. Each component keeps its own small dense weights, named like PyTorch's with a component suffix
(``weight_ih_l0_c1``, ``weight_hh_l1_reverse_c0``...). Trainable parameters are exactly the non-zero pattern.

Two formulations compute the same function; ``formulation="auto"`` (the default) picks per device what
benchmarks/predefined_speed.py measured fastest (seq 35, batch 20, dense n = 200 / 650 / 1500, k = 2 / 4 / 8):

- ``"loop"``: one fused native call per component (oneDNN on CPU, cuDNN on CUDA), both directions at once. On CPU it
  is the fastest correct formulation found: 1.5-9x faster than the masked dense layer (which pays for all the zeros)
  and level with the authors' k separate nn.LSTM modules. A hand-written grouped BPTT (batched matrix products per time
  step, custom backward) ran 2.5-3.4x slower than the fused kernels and was not kept. Against the dense layer of
  equal parameters it costs 1.29-2.21x at n = 200, 1.04-1.39x at n = 650 and 0.87-0.94x at n = 1500 (2-core CPU): the
  sparse layer has 1.56-3.5x the hidden units, and benchmarks/predefined_floor.py measures the fused kernel's cost per
  unit, which alone puts the best reachable ratio at 1.11-1.47 (n = 200). On CUDA each cuDNN call costs about the
  same latency whatever its size, so the loop costs ~k times one call.
- ``"masked"``: the dense-equivalent weights assembled from the components (one scatter each), one native call for all
  layers. On an H100 it is as fast as the loop to 3.6x faster while the dense-equivalent layer is small per component
  (n = 200, 650), and up to 1.3x slower when it is large (n = 1500: H_s = 2342-5290); "auto" switches at
  ``CUDA_MASKED_MAX_ENTRIES`` weight entries per component.

- ``"flashrnn"`` (CUDA, the optional ``gpu`` extra): NX-AI's fused multi-head recurrence, which is exactly the
  block-diagonal W_hh (compress/predefined/flashrnn_kernel.py); components of equal size, no packed input. "auto"
  takes it on CUDA only where benchmarks/gpu_check.sh measured it faster: ``FLASHRNN_AUTO_MAX_HIDDEN`` (0 until a GPU
  run sets it, so "auto" never picks it unmeasured).

Running the loop's components on separate CUDA streams was measured too: 2-21% slower than the plain loop (the
per-call host work, not the GPU, is the bottleneck), so it was not kept.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from compress.predefined.layout import LayerLayout, gate_count
from compress.predefined.planner import dense_parameter_count

Formulation = Literal["auto", "loop", "masked", "flashrnn"]
FORMULATIONS = ("auto", "loop", "masked", "flashrnn")
# "auto" on CUDA: masked while the dense-equivalent layer has at most this many weight entries per component, else loop
# (benchmarks/predefined_speed.py on an H100; see the module docstring).
CUDA_MASKED_MAX_ENTRIES = 12_000_000
# "auto" on CUDA takes flashrnn for layers up to this hidden size, where benchmarks/gpu_check.sh measured it faster than
# the formulation above; 0 = never (no GPU run has measured it yet).
FLASHRNN_AUTO_MAX_HIDDEN = 0

_NATIVE = {"lstm": torch.lstm, "gru": torch.gru, "rnn_tanh": torch.rnn_tanh, "rnn_relu": torch.rnn_relu}
_PARAM_KINDS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def _per_layer(value, num_layers: int, name: str) -> list:
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != num_layers:
            raise ValueError(f"{name} has {len(value)} entries but num_layers is {num_layers}")
        return list(value)
    return [value] * num_layers


class SparseRecurrent(nn.Module):
    """Base class; use :class:`SparseLSTM`, :class:`SparseGRU` or :class:`SparseRNN`."""

    cell: ClassVar[str]

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        *,
        components: int | Sequence[int] = 1,
        input_density: float | Sequence[float] = 1.0,
        formulation: Formulation = "auto",
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if formulation not in FORMULATIONS:
            raise ValueError(f"formulation must be one of {', '.join(map(repr, FORMULATIONS))}, got {formulation!r}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.formulation = formulation
        self.gates = gate_count(self.cell)
        directions = 2 if bidirectional else 1
        ks = _per_layer(components, num_layers, "components")
        deltas = _per_layer(input_density, num_layers, "input_density")
        self.layouts: list[LayerLayout] = []
        for layer in range(num_layers):
            n_in = input_size if layer == 0 else hidden_size * directions
            self.layouts.append(LayerLayout.build(n_in, hidden_size, ks[layer], deltas[layer]))
        # What "auto" means on CUDA, fixed by the layouts (so not re-derived on every forward): see the docstring.
        per_component = max(
            self.gates * layout.hidden_size * (layout.input_size + layout.hidden_size) / layout.components
            for layout in self.layouts
        )
        self._cuda_auto = "masked" if per_component <= CUDA_MASKED_MAX_ENTRIES else "loop"
        factory = {"device": device, "dtype": dtype}
        for layer, layout in enumerate(self.layouts):
            for suffix in self._suffixes:
                for c, (h, (_, length)) in enumerate(zip(layout.hidden_sizes, layout.windows, strict=True)):
                    shapes = {
                        "weight_ih": (self.gates * h, length),
                        "weight_hh": (self.gates * h, h),
                        "bias_ih": (self.gates * h,),
                        "bias_hh": (self.gates * h,),
                    }
                    for kind in _PARAM_KINDS if bias else _PARAM_KINDS[:2]:
                        param = nn.Parameter(torch.empty(shapes[kind], **factory))
                        self.register_parameter(self._name(kind, layer, suffix, c), param)
        self.reset_parameters()

    # -- structure -------------------------------------------------------------------------------------------------

    @property
    def _suffixes(self) -> tuple[str, ...]:
        return ("", "_reverse") if self.bidirectional else ("",)

    @staticmethod
    def _name(kind: str, layer: int, suffix: str, component: int) -> str:
        return f"{kind}_l{layer}{suffix}_c{component}"

    @property
    def components(self) -> list[int]:
        return [layout.components for layout in self.layouts]

    def component_parameters(self, layer: int, component: int, suffix: str = "") -> list[Tensor]:
        """The component's weights in PyTorch's flat order: weight_ih, weight_hh[, bias_ih, bias_hh]."""
        kinds = _PARAM_KINDS if self.bias else _PARAM_KINDS[:2]
        return [getattr(self, self._name(kind, layer, suffix, component)) for kind in kinds]

    def reset_parameters(self) -> None:
        # Each component is initialised like a dense layer of its own size, as k independent small layers would be.
        for layer, layout in enumerate(self.layouts):
            for suffix in self._suffixes:
                for c, h in enumerate(layout.hidden_sizes):
                    bound = 1.0 / math.sqrt(h)
                    for param in self.component_parameters(layer, c, suffix):
                        nn.init.uniform_(param, -bound, bound)

    def flatten_parameters(self) -> None:
        """Lay each component's weights out as one contiguous cuDNN buffer (on CUDA; a no-op elsewhere).

        As ``torch.nn.LSTM.flatten_parameters``: the parameters stay the same objects (optimizers keep them), their
        storage becomes views into one buffer per component, so cuDNN reads them in place instead of copying them into
        a fresh buffer on every call (and warning about it). Called after every ``.to()``/``.cuda()``.
        """
        first = next(self.parameters(), None)
        if first is None or not first.is_cuda or not torch.backends.cudnn.is_acceptable(first):
            return
        if not torch._use_cudnn_rnn_flatten_weight():
            return
        from torch.backends.cudnn import rnn as cudnn_rnn

        mode = cudnn_rnn.get_cudnn_mode(self.cell.upper())
        with torch.cuda.device_of(first), torch.no_grad():
            for layer, layout in enumerate(self.layouts):
                for c, (h, (_, length)) in enumerate(zip(layout.hidden_sizes, layout.windows, strict=True)):
                    weights = [p for suffix in self._suffixes for p in self.component_parameters(layer, c, suffix)]
                    if len({w.data_ptr() for w in weights}) != len(weights) or any(
                        w.dtype != first.dtype for w in weights
                    ):
                        continue
                    torch._cudnn_rnn_flatten_weight(
                        weights, 4 if self.bias else 2, length, mode, h, 0, 1, self.batch_first, self.bidirectional
                    )

    def _apply(self, fn, recurse=True):
        result = super()._apply(fn, recurse)
        self.flatten_parameters()
        return result

    def extra_repr(self) -> str:
        parts = [f"{self.input_size}, {self.hidden_size}", f"components={self.components}"]
        parts.append(f"windows={[layout.windows[0][1] for layout in self.layouts]}")
        if self.num_layers != 1:
            parts.append(f"num_layers={self.num_layers}")
        if not self.bias:
            parts.append("bias=False")
        if self.batch_first:
            parts.append("batch_first=True")
        if self.dropout:
            parts.append(f"dropout={self.dropout}")
        if self.bidirectional:
            parts.append("bidirectional=True")
        return ", ".join(parts)

    # -- dense equivalent ------------------------------------------------------------------------------------------

    def _scatter_index(self, layer: int, device: torch.device) -> tuple[Tensor, ...]:
        """Dense (row, column) positions of every component entry, components concatenated in parameter order.

        Gate g of component c lands on dense rows g*H + offset_c + [0, h_c), as PyTorch packs its gates. Built once
        per layer and device: on CUDA, rebuilding index tensors each forward would mean host-to-device copies.
        """
        key = (layer, str(device))
        cache = self.__dict__.setdefault("_index_cache", {})
        if key not in cache:
            layout = self.layouts[layer]
            big_h = layout.hidden_size
            ih_rows, ih_cols, hh_rows, hh_cols, bias_rows = [], [], [], [], []
            for offset, h, (start, length) in zip(
                layout.hidden_offsets, layout.hidden_sizes, layout.windows, strict=True
            ):
                rows = torch.cat([torch.arange(g * big_h + offset, g * big_h + offset + h) for g in range(self.gates)])
                in_cols = torch.arange(start, start + length)
                hid_cols = torch.arange(offset, offset + h)
                ih_rows.append(rows.repeat_interleave(length))
                ih_cols.append(in_cols.repeat(rows.numel()))
                hh_rows.append(rows.repeat_interleave(h))
                hh_cols.append(hid_cols.repeat(rows.numel()))
                bias_rows.append(rows)
            cache[key] = tuple(torch.cat(parts).to(device) for parts in (ih_rows, ih_cols, hh_rows, hh_cols, bias_rows))
        return cache[key]

    def _assemble(self, layer: int, suffix: str, fill: str) -> list[Tensor]:
        """Dense PyTorch-layout tensors of one layer and direction, built from the components in one scatter each.

        ``fill="weights"`` gives the differentiable dense weights (zeros off the pattern), ``fill="mask"`` the 0/1
        pattern.
        """
        layout = self.layouts[layer]
        big_h, gates = layout.hidden_size, self.gates
        components = [self.component_parameters(layer, c, suffix) for c in range(layout.components)]
        reference = components[0][0]
        ih_rows, ih_cols, hh_rows, hh_cols, bias_rows = self._scatter_index(layer, reference.device)

        def values(kind: int) -> Tensor:
            flat = torch.cat([params[kind].reshape(-1) for params in components])
            return torch.ones_like(flat) if fill == "mask" else flat

        dense = [
            reference.new_zeros(gates * big_h, layout.input_size).index_put((ih_rows, ih_cols), values(0)),
            reference.new_zeros(gates * big_h, big_h).index_put((hh_rows, hh_cols), values(1)),
        ]
        if self.bias:
            dense.append(reference.new_zeros(gates * big_h).index_put((bias_rows,), values(2)))
            dense.append(reference.new_zeros(gates * big_h).index_put((bias_rows,), values(3)))
        return dense

    def dense_parameter_count(self) -> int:
        """Entries of the dense PyTorch layer with the same sizes (from the layout: nothing is materialised)."""
        directions = len(self._suffixes)
        return directions * sum(
            dense_parameter_count(self.cell, layout.input_size, layout.hidden_size, self.bias)
            for layout in self.layouts
        )

    def dense_equivalent(self) -> dict[str, tuple[Tensor, Tensor]]:
        """``name -> (weight, mask)`` in ``torch.nn.LSTM``/``GRU``/``RNN`` parameter names and layout.

        Loading the weights into the dense PyTorch layer reproduces this layer exactly; the mask (0/1, same dtype)
        marks the entries that exist here.
        """
        result = {}
        kinds = _PARAM_KINDS if self.bias else _PARAM_KINDS[:2]
        with torch.no_grad():
            for layer in range(self.num_layers):
                for suffix in self._suffixes:
                    weights = self._assemble(layer, suffix, "weights")
                    masks = self._assemble(layer, suffix, "mask")
                    for kind, weight, mask in zip(kinds, weights, masks, strict=True):
                        result[f"{kind}_l{layer}{suffix}"] = (weight.clone(), mask)
        return result

    # -- forward ---------------------------------------------------------------------------------------------------

    def forward(self, input: Tensor | PackedSequence, hx: Tensor | tuple[Tensor, Tensor] | None = None):
        is_lstm = self.cell == "lstm"
        directions = len(self._suffixes)
        packed = isinstance(input, PackedSequence)
        batch_sizes = sorted_indices = unsorted_indices = None
        unbatched = False
        if packed:
            data, batch_sizes, sorted_indices, unsorted_indices = input
            batch = int(batch_sizes[0])
        else:
            data = input
            if data.dim() not in (2, 3):
                raise ValueError(f"expected input with 2 (unbatched) or 3 dimensions, got shape {tuple(data.shape)}")
            unbatched = data.dim() == 2
            if unbatched:
                data = data.unsqueeze(0 if self.batch_first else 1)
            batch = data.size(0 if self.batch_first else 1)
        if data.size(-1) != self.input_size:
            raise ValueError(f"input has {data.size(-1)} features, expected input_size={self.input_size}")

        states = self._initial_states(hx, batch, data, unbatched, sorted_indices)
        formulation = self._resolved_formulation(data.device, packed)
        if formulation == "flashrnn":
            from compress.predefined import flashrnn_kernel

            reason = flashrnn_kernel.unsupported_reason(self, data.device, packed)
            if reason is not None:
                raise ValueError(f"formulation 'flashrnn': {reason}")
            output, finals = flashrnn_kernel.forward(self, data, states)
        elif formulation == "masked":
            output, finals = self._forward_masked(data, batch_sizes, states)
        else:
            output, finals = self._forward_loop(data, batch_sizes, states, directions)

        if packed:
            output = PackedSequence(output, batch_sizes, sorted_indices, unsorted_indices)
            if unsorted_indices is not None:
                finals = [f.index_select(1, unsorted_indices) for f in finals]
        elif unbatched:
            output = output.squeeze(0 if self.batch_first else 1)
            finals = [f.squeeze(1) for f in finals]
        return output, (tuple(finals) if is_lstm else finals[0])

    def _resolved_formulation(self, device: torch.device, packed: bool = False) -> str:
        """ "auto": the loop on CPU; on CUDA flashrnn where measured faster, else the masked layer unless it is large
        per component (see the docstring)."""
        if self.formulation != "auto":
            return self.formulation
        if device.type != "cuda":
            return "loop"
        if self.hidden_size <= FLASHRNN_AUTO_MAX_HIDDEN:
            from compress.predefined import flashrnn_kernel

            if flashrnn_kernel.unsupported_reason(self, device, packed) is None:
                return "flashrnn"
        return self._cuda_auto

    def _initial_states(self, hx, batch: int, data: Tensor, unbatched: bool, sorted_indices) -> list[Tensor]:
        expected = (self.num_layers * len(self._suffixes), batch, self.hidden_size)
        if hx is None:
            zeros = data.new_zeros(expected)
            return [zeros, zeros] if self.cell == "lstm" else [zeros]
        states = list(hx) if self.cell == "lstm" else [hx]
        if self.cell == "lstm" and len(states) != 2:
            raise ValueError("an LSTM's initial state is a tuple (h_0, c_0)")
        if self.cell != "lstm" and not isinstance(hx, Tensor):
            raise ValueError(f"the initial state of a {type(self).__name__} is one tensor h_0")
        if unbatched:
            states = [s.unsqueeze(1) for s in states]
        for s in states:
            if tuple(s.shape) != expected:
                raise ValueError(f"initial state has shape {tuple(s.shape)}, expected {expected}")
        if sorted_indices is not None:
            states = [s.index_select(1, sorted_indices) for s in states]
        return states

    def _call_native(self, data, batch_sizes, states, params, num_layers, dropout, bidirectional):
        fn = _NATIVE[self.cell]
        hx = states if self.cell == "lstm" else states[0]
        if batch_sizes is not None:
            result = fn(data, batch_sizes, hx, params, self.bias, num_layers, dropout, self.training, bidirectional)
        else:
            result = fn(
                data, hx, params, self.bias, num_layers, dropout, self.training, bidirectional, self.batch_first
            )
        return result[0], list(result[1:])

    def _forward_loop(self, data, batch_sizes, states, directions):
        layer_input = data
        finals: list[list[Tensor]] = [[] for _ in states]
        for layer, layout in enumerate(self.layouts):
            outputs, layer_finals = [], [[] for _ in states]
            for c, (offset, h, (start, length)) in enumerate(
                zip(layout.hidden_offsets, layout.hidden_sizes, layout.windows, strict=True)
            ):
                window = layer_input if length == layout.input_size else layer_input[..., start : start + length]
                layer_states = [
                    s[layer * directions : (layer + 1) * directions, :, offset : offset + h].contiguous()
                    for s in states
                ]
                params = [p for suffix in self._suffixes for p in self.component_parameters(layer, c, suffix)]
                out, fin = self._call_native(window, batch_sizes, layer_states, params, 1, 0.0, self.bidirectional)
                outputs.append(out)
                for store, f in zip(layer_finals, fin, strict=True):
                    store.append(f)
            if directions == 1:
                layer_output = torch.cat(outputs, -1)
            else:  # each component returns [forward | backward]; PyTorch's layout is [all forward | all backward]
                sizes = layout.hidden_sizes
                forward_parts = [o[..., :h] for o, h in zip(outputs, sizes, strict=True)]
                backward_parts = [o[..., h:] for o, h in zip(outputs, sizes, strict=True)]
                layer_output = torch.cat(forward_parts + backward_parts, -1)
            for store, parts in zip(finals, layer_finals, strict=True):
                store.append(torch.cat(parts, -1))
            if self.dropout and self.training and layer < self.num_layers - 1:
                layer_output = F.dropout(layer_output, self.dropout, training=True)
            layer_input = layer_output
        return layer_input, [torch.cat(parts, 0) for parts in finals]

    def _forward_masked(self, data, batch_sizes, states):
        params = [
            w
            for layer in range(self.num_layers)
            for suffix in self._suffixes
            for w in self._assemble(layer, suffix, "weights")
        ]
        # On CUDA, cuDNN copies freshly assembled weights into its own layout, which is inherent to this formulation
        # (and measured in the benchmark): its advice to call flatten_parameters() would mislead, so it is not shown.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="RNN module weights are not part of single contiguous")
            return self._call_native(
                data, batch_sizes, states, params, self.num_layers, self.dropout, self.bidirectional
            )


class SparseLSTM(SparseRecurrent):
    """Predefined-sparse ``torch.nn.LSTM``: block-diagonal recurrent weights, banded (windowed) input weights."""

    cell = "lstm"


class SparseGRU(SparseRecurrent):
    """Predefined-sparse ``torch.nn.GRU``."""

    cell = "gru"


class SparseRNN(SparseRecurrent):
    """Predefined-sparse ``torch.nn.RNN`` with ``nonlinearity`` ``"tanh"`` (default) or ``"relu"``."""

    cell = "rnn_tanh"

    def __init__(self, input_size: int, hidden_size: int, *args, nonlinearity: str = "tanh", **kwargs) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.cell = f"rnn_{nonlinearity}"
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, *args, **kwargs)
