"""Sparse recurrent layers beside their dense PyTorch twins, and a forward-backward pass to compare them."""

from __future__ import annotations

import torch
from torch import nn

from compress.predefined import SparseGRU, SparseLSTM, SparseRNN

CELLS = {
    "lstm": (SparseLSTM, nn.LSTM, {}),
    "gru": (SparseGRU, nn.GRU, {}),
    "rnn_tanh": (SparseRNN, nn.RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (SparseRNN, nn.RNN, {"nonlinearity": "relu"}),
}


def make_pair(cell, input_size, hidden_size, *, seed=0, **kwargs):
    """A sparse layer and a dense PyTorch layer loaded with its dense equivalent, both float64."""
    sparse_cls, dense_cls, extra = CELLS[cell]
    torch.manual_seed(seed)
    sparse_kwargs = {k: kwargs.pop(k) for k in ("components", "input_density", "formulation") if k in kwargs}
    sparse = sparse_cls(input_size, hidden_size, **kwargs, **extra, **sparse_kwargs).double()
    dense = dense_cls(input_size, hidden_size, **kwargs, **extra).double()
    dense.load_state_dict({name: w for name, (w, _) in sparse.dense_equivalent().items()})
    return sparse, dense


def run(layer, x, hx=None):
    x = x.clone().requires_grad_(True)
    out, state = layer(x, hx)
    states = state if isinstance(state, tuple) else (state,)
    # A loss touching the outputs and every final state, with unequal weights so that no gradient cancels.
    loss = (out * torch.linspace(0.5, 1.5, out.shape[-1], dtype=out.dtype, device=out.device)).sum() + sum(
        (s**2).sum() for s in states
    )
    loss.backward()
    return out.detach(), [s.detach() for s in states], x.grad
