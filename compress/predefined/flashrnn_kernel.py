"""The predefined-sparse layer on NX-AI's ``flashrnn`` kernels (CUDA only; the optional ``gpu`` extra).

A predefined layer with k equal components is exactly flashrnn's "multi-head" recurrence: its block-diagonal W_hh is
R with k heads of size h, so the recurrence runs in one fused kernel instead of k cuDNN calls. The banded input
projection stays outside (one ``F.linear`` per component window, run for all time steps at once), as flashrnn expects
``Wx`` precomputed. Mapping from PyTorch's packed gates (checked against flashrnn's own ``vanilla`` reference):

- LSTM: gates i, f, g, o in both; bias = b_ih + b_hh;
- GRU: flashrnn's R gates are [n, r, z] (PyTorch's W_hh is [r, z, n]), its Wx gates [r, z, n], and its four biases
  [b_hn, b_ir + b_hr, b_iz + b_hz, b_in]: the reset gate multiplies W_hn h + b_hn, as in PyTorch;
- RNN: flashrnn's "elman" is tanh only, so ReLU RNNs are not offered.

Shapes (flashrnn's defaults): Wx (B, T, G, k, h), R (G, k, h, h) with R[g, c, d, p] = W_hh_c[g*h + d, p], b (G', k, h),
states (S, B, 1, k, h). Packed sequences are not supported (flashrnn has no lengths); callers fall back.
"""

from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F
from torch import Tensor

FUNCTIONS = {"lstm": "lstm", "gru": "gru", "rnn_tanh": "elman"}
# Tried in this order: the fused kernel keeps R in registers/SRAM but not every dtype and head size builds for it.
BACKENDS = ("cuda_fused", "cuda")
# (cell, dtype, head size) -> the first backend that ran; filled on first use.
_WORKING: dict[tuple[str, str, int], str] = {}


def installed() -> bool:
    return importlib.util.find_spec("flashrnn") is not None


def unsupported_reason(layer, device: torch.device, packed: bool = False) -> str | None:
    """Why flashrnn cannot run this layer here, or None when it can."""
    if device.type != "cuda":
        return "flashrnn needs CUDA"
    if not installed():
        return "the flashrnn package is not installed (pip install 'sparseq[gpu]')"
    if layer.cell not in FUNCTIONS:
        return f"flashrnn has no {layer.cell} cell"
    if packed:
        return "flashrnn takes no sequence lengths (packed input)"
    if any(len(set(layout.hidden_sizes)) != 1 for layout in layer.layouts):
        return "components of unequal size are not flashrnn heads"
    return None


def _gru_order(t: Tensor, h: int) -> Tensor:
    """PyTorch's [r, z, n] gate blocks (first dimension 3h) as flashrnn's recurrent order [n, r, z]."""
    r, z, n = t.split(h, 0)
    return torch.cat([n, r, z], 0)


def _direction(layer, layer_index: int, suffix: str, x: Tensor, states: list[Tensor], backend: str):
    """One layer and direction over time-major ``x`` (T, B, n_in); ``states`` are (B, H) slices."""
    from flashrnn import flashrnn

    layout = layer.layouts[layer_index]
    k, h, gates = layout.components, layout.hidden_sizes[0], layer.gates
    params = [layer.component_parameters(layer_index, c, suffix) for c in range(k)]
    steps, batch = x.shape[0], x.shape[1]
    wx, r, b = [], [], []
    for c, (start, length) in enumerate(layout.windows):
        w_ih, w_hh = params[c][0], params[c][1]
        zeros = w_ih.new_zeros(gates * h)
        b_ih, b_hh = (params[c][2], params[c][3]) if layer.bias else (zeros, zeros)
        projected = F.linear(x[..., start : start + length], w_ih)  # (T, B, G*h)
        if layer.cell == "gru":
            r.append(_gru_order(w_hh, h).view(gates, h, h))
            b_r, b_z, b_n = b_ih.split(h)
            h_r, h_z, h_n = b_hh.split(h)
            b.append(torch.stack([h_n, b_r + h_r, b_z + h_z, b_n]))
        else:
            r.append(w_hh.view(gates, h, h))
            b.append((b_ih + b_hh).view(gates, h))
        wx.append(projected.view(steps, batch, gates, h))
    wx_all = torch.stack(wx, 3).transpose(0, 1).contiguous()  # (B, T, G, k, h)
    r_all = torch.stack(r, 1).contiguous()  # (G, k, h, h)
    b_all = torch.stack(b, 1).contiguous()  # (G', k, h)
    initial = torch.stack([s.view(batch, 1, k, h) for s in states])  # (S, B, 1, k, h)
    dtype = str(x.dtype).removeprefix("torch.")
    function = FUNCTIONS[layer.cell]
    key = (layer.cell, dtype, h)
    tried = [backend] if backend != "auto" else ([_WORKING[key]] if key in _WORKING else list(BACKENDS))
    for index, name in enumerate(tried):
        try:
            out, last = flashrnn(wx_all, r_all, b_all, states=initial, function=function, backend=name, dtype=dtype)
        except Exception:
            if index == len(tried) - 1:
                raise
            continue
        _WORKING.setdefault(key, name)
        break
    hidden = out[0].reshape(batch, steps, k * h).transpose(0, 1)  # (T, B, H)
    finals = [last[s].reshape(batch, k * h) for s in range(last.shape[0])]
    return hidden, finals


def forward(layer, data: Tensor, states: list[Tensor], backend: str = "auto"):
    """The whole stack on flashrnn: ``data`` (T, B, n_in) or batch-first as the layer says; returns (output, finals)
    in the conventions of ``SparseRecurrent._forward_loop``. ``backend="auto"``: the first of :data:`BACKENDS` that
    runs for this cell, dtype and head size."""
    x = data.transpose(0, 1) if layer.batch_first else data
    directions = len(layer._suffixes)
    finals: list[list[Tensor]] = [[] for _ in states]
    for index in range(layer.num_layers):
        outputs = []
        for d, suffix in enumerate(layer._suffixes):
            slot = index * directions + d
            source = x.flip(0) if d == 1 else x
            hidden, last = _direction(layer, index, suffix, source, [s[slot] for s in states], backend)
            outputs.append(hidden.flip(0) if d == 1 else hidden)
            for store, f in zip(finals, last, strict=True):
                store.append(f)
        x = outputs[0] if directions == 1 else torch.cat(outputs, -1)
        if layer.dropout and layer.training and index < layer.num_layers - 1:
            x = F.dropout(x, layer.dropout, training=True)
    output = x.transpose(0, 1) if layer.batch_first else x
    return output, [torch.stack(parts) for parts in finals]
