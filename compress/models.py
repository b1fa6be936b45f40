"""Models for the text tasks, built from a recipe: recurrent stack and embedding, dense or predefined-sparse.

``build_recurrent`` is the one place that turns (model spec, method) into a recurrent layer, so every task and every
baseline gets its layers the same way. With ``budget_of``, the planner chooses k and delta per layer so that the sparse
stack has the parameters of a dense stack ``hidden_scale`` times narrower (Demeester et al., "Predefined Sparseness in
Recurrent Sequence Models", CoNLL 2018: recurrent layers).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from compress.predefined import SparseEmbedding, SparseGRU, SparseLSTM, SparseRNN, plan_recurrent
from compress.spec import DenseMethod, ModelSpec, PredefinedMethod

_DENSE = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn_tanh": nn.RNN, "rnn_relu": nn.RNN}
_SPARSE = {"lstm": SparseLSTM, "gru": SparseGRU, "rnn_tanh": SparseRNN, "rnn_relu": SparseRNN}


def _rnn_kwargs(spec: ModelSpec) -> dict:
    kwargs = {"num_layers": spec.num_layers, "dropout": spec.dropout if spec.num_layers > 1 else 0.0}
    kwargs["bidirectional"] = spec.bidirectional
    if spec.cell.startswith("rnn_"):
        kwargs["nonlinearity"] = spec.cell.removeprefix("rnn_")
    return kwargs


def plan_layers(spec: ModelSpec, input_size: int, hidden_scale: float) -> tuple[list[int], list[float]]:
    """Per-layer (components, input_density) matching a dense stack with hidden size ``hidden_size / hidden_scale``."""
    directions = 2 if spec.bidirectional else 1
    components, densities = [], []
    for layer in range(spec.num_layers):
        n_in = input_size if layer == 0 else spec.hidden_size * directions
        in_factor = 1.0 if layer == 0 else 1 / hidden_scale
        plan = plan_recurrent(spec.cell, n_in, spec.hidden_size, in_factor, 1 / hidden_scale)
        components.append(plan.components)
        densities.append(plan.input_density)
    return components, densities


def build_recurrent(
    spec: ModelSpec, method, input_size: int, *, batch_first: bool = False, bias: bool = True
) -> nn.Module:
    """A dense PyTorch layer, or a predefined-sparse one when the method asks for sparse recurrent layers."""
    kwargs = _rnn_kwargs(spec) | {"batch_first": batch_first, "bias": bias}
    recurrent = method.recurrent if isinstance(method, PredefinedMethod) else None
    if recurrent is None:
        return _DENSE[spec.cell](input_size, spec.hidden_size, **kwargs)
    if recurrent.budget_of is not None:
        components, densities = plan_layers(spec, input_size, recurrent.budget_of.hidden_scale)
    else:
        components = recurrent.components
        densities = 1.0 if recurrent.input_density is None else recurrent.input_density
    return _SPARSE[spec.cell](input_size, spec.hidden_size, **kwargs, components=components, input_density=densities)


def build_embedding(spec: ModelSpec, method, vocab_size: int) -> nn.Module:
    embedding = method.embedding if isinstance(method, PredefinedMethod) else None
    if embedding is None:
        return nn.Embedding(vocab_size, spec.embedding_size)
    return SparseEmbedding(vocab_size, spec.embedding_size, embedding.blocks, embedding.density, embedding.order)


class _Reordered(nn.Module):
    """``reordered``: the user's token ids are not in frequency order, which predefined-sparse embeddings need (the
    frequent words get the long vectors). The buffer ``token_rank`` (id -> frequency rank on the training data) maps
    ids on the way in and the outputs back, so the model speaks the user's ids and the embedding its own order."""

    def _order(self, vocab_size: int, reordered: bool) -> None:
        if reordered:
            self.register_buffer("token_rank", torch.arange(vocab_size))
        else:
            self.token_rank = None

    def _ranked(self, tokens: Tensor) -> Tensor:
        return tokens if self.token_rank is None else self.token_rank[tokens]


class LanguageModel(_Reordered):
    """Embedding -> dropout -> recurrent stack -> dropout -> decoder (optionally tied to the embedding)."""

    def __init__(self, spec: ModelSpec, method, vocab_size: int, *, reordered: bool = False) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self._order(vocab_size, reordered)
        self.embedding = build_embedding(spec, method, vocab_size)
        self.rnn = build_recurrent(spec, method, spec.embedding_size)
        self.dropout = nn.Dropout(spec.dropout)
        self.tied = spec.tie_weights
        if self.tied:
            self.decoder_bias = nn.Parameter(torch.zeros(vocab_size))
        else:
            self.decoder = nn.Linear(spec.hidden_size, vocab_size)
        self._init_like_the_papers()

    def _init_like_the_papers(self) -> None:
        # Word-level LMs start from small uniform embeddings (Zaremba et al.; AWD-LSTM); N(0, 1) makes tied logits huge.
        for parameter in self.embedding.parameters():
            nn.init.uniform_(parameter, -0.1, 0.1)
        if not self.tied:
            nn.init.uniform_(self.decoder.weight, -0.1, 0.1)
            nn.init.zeros_(self.decoder.bias)

    def forward(self, tokens: Tensor, state=None):
        """tokens (T, B) -> logits (T, B, V), new state."""
        hidden, state = self.rnn(self.dropout(self.embedding(self._ranked(tokens))), state)
        logits = self._decode(self.dropout(hidden))
        return (logits if self.token_rank is None else logits.index_select(-1, self.token_rank)), state

    def _decode(self, hidden: Tensor) -> Tensor:
        if not self.tied:
            return self.decoder(hidden)
        if isinstance(self.embedding, SparseEmbedding):
            return self.embedding.decode(hidden) + self.decoder_bias
        return hidden @ self.embedding.weight.t() + self.decoder_bias


class SequenceTagger(_Reordered):
    """The seed experiment's tagger: embedding -> (Bi)LSTM -> Linear(2h -> h) + tanh -> Linear(h -> tags)."""

    def __init__(self, spec: ModelSpec, method, vocab_size: int, num_tags: int, *, reordered: bool = False) -> None:
        super().__init__()
        self._order(vocab_size, reordered)
        self.embedding = build_embedding(spec, method, vocab_size)
        self.rnn = build_recurrent(spec, method, spec.embedding_size)
        width = spec.hidden_size * (2 if spec.bidirectional else 1)
        self.hidden = nn.Linear(width, spec.hidden_size)
        self.output = nn.Linear(spec.hidden_size, num_tags)
        self.dropout = nn.Dropout(spec.dropout)

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        """tokens (T, B) padded, lengths (B,) -> tag logits (T, B, tags); padded positions are garbage to be masked."""
        embedded = self.dropout(self.embedding(self._ranked(tokens)))
        packed = pack_padded_sequence(embedded, lengths.cpu(), enforce_sorted=False)
        output, _ = self.rnn(packed)
        if isinstance(output, PackedSequence):
            output, _ = pad_packed_sequence(output, total_length=tokens.size(0))
        return self.output(torch.tanh(self.hidden(self.dropout(output))))


def is_dense(method) -> bool:
    return isinstance(method, DenseMethod) or not isinstance(method, PredefinedMethod)
