"""Predefined-sparse word embeddings: frequent words get long vectors, rare words short ones (Demeester et al.,
"Predefined Sparseness in Recurrent Sequence Models", CoNLL 2018: embeddings).

The d dimensions are cut into B blocks; block 0 covers every word, block b only the ~V*alpha^b words ranked first.
Each block is a small dense table, so no V x d mask is ever held in memory. A word's vector is its blocks' entries,
zeros elsewhere. The total number of trainable entries is exactly floor(V * d * density): when the budget does not
fill whole rows, one word of one block gets a partial row (its first few entries in that block).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Order = Literal["frequent_long", "rare_long", "random"]
_EPS = 1e-9


@dataclass(frozen=True)
class BlockAllocation:
    """Widths of the B blocks, and how many words each covers: ``rows[b]`` full rows plus ``partial[b]`` entries of
    the next word (``partial[b] < widths[b]``)."""

    widths: tuple[int, ...]
    rows: tuple[int, ...]
    partial: tuple[int, ...]

    @property
    def words(self) -> tuple[int, ...]:
        """Words with at least one entry in each block."""
        return tuple(r + (p > 0) for r, p in zip(self.rows, self.partial, strict=True))

    @property
    def parameters(self) -> int:
        return sum(w * r + p for w, r, p in zip(self.widths, self.rows, self.partial, strict=True))


def _solve_ratio(remaining: int, previous_rows: int, widths: tuple[int, ...]) -> float:
    """alpha in [0, 1] with sum_j widths[j] * previous_rows * alpha^(j+1) == remaining (bisection)."""

    def filled(alpha: float) -> float:
        return sum(w * previous_rows * alpha ** (j + 1) for j, w in enumerate(widths))

    if filled(1.0) <= remaining:
        return 1.0
    low, high = 0.0, 1.0
    for _ in range(60):
        mid = (low + high) / 2
        if filled(mid) < remaining:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def allocate_blocks(num_embeddings: int, embedding_dim: int, blocks: int, density: float) -> BlockAllocation:
    """Greedy allocation: block 0 covers all V words; each later block keeps a geometric share alpha of the previous
    block's words, alpha re-solved for the remaining blocks and budget; the last block takes the exact remainder."""
    if num_embeddings < 1 or embedding_dim < 1:
        raise ValueError(f"num_embeddings and embedding_dim must be >= 1, got {num_embeddings} and {embedding_dim}")
    if not 1 <= blocks <= embedding_dim:
        raise ValueError(f"blocks must be between 1 and embedding_dim ({embedding_dim}), got {blocks}")
    if not 0 < density <= 1:
        raise ValueError(f"density must be in (0, 1], got {density}")
    width = embedding_dim // blocks
    widths = (width,) * (blocks - 1) + (embedding_dim - width * (blocks - 1),)
    budget = math.floor(num_embeddings * embedding_dim * density + _EPS)
    if budget < widths[0] * num_embeddings:
        raise ValueError(
            f"density {density} is below {widths[0] / embedding_dim:.4g}, what block 0 alone needs (it gives every "
            f"word {widths[0]} dimensions): use fewer blocks or a higher density"
        )
    rows, partial = [num_embeddings], [0]
    remaining = budget - widths[0] * num_embeddings
    for b in range(1, blocks):
        previous = rows[-1]
        if remaining == 0:
            rows.append(0)
            partial.append(0)
            continue
        later = sum(widths[b + 1 :])
        # Enough rows here that the later blocks (nested inside this one) can hold the rest, and no more than fit.
        fewest = math.ceil(remaining / (widths[b] + later))
        most = min(previous, remaining // widths[b])
        if fewest > most:  # the rest is less than what whole rows can carry: finish with a partial row here
            rows.append(remaining // widths[b])
            partial.append(remaining % widths[b])
            remaining = 0
            continue
        alpha = _solve_ratio(remaining, previous, widths[b:])
        count = min(max(math.ceil(previous * alpha - _EPS), fewest), most)
        rows.append(count)
        partial.append(0)
        remaining -= count * widths[b]
    allocation = BlockAllocation(widths, tuple(rows), tuple(partial))
    assert allocation.parameters == budget, (allocation, budget)
    return allocation


class SparseEmbedding(nn.Module):
    """Embedding table with predefined sparsity by word frequency, optionally tied to an output layer.

    Ids must be ordered by training frequency (0 = most frequent; :func:`compress.vocab.build_vocabulary` does this).
    ``order`` chooses who gets the long vectors: ``"frequent_long"`` (the paper's default), ``"rare_long"`` (reversed)
    or ``"random"`` (a seeded permutation) - the paper's ablations.
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        blocks: int,
        density: float,
        order: Order = "frequent_long",
        *,
        seed: int = 0,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        if order not in ("frequent_long", "rare_long", "random"):
            raise ValueError(f"order must be 'frequent_long', 'rare_long' or 'random', got {order!r}")
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.density = density
        self.order = order
        self.allocation = allocate_blocks(num_embeddings, embedding_dim, blocks, density)
        # rank[token id] = position in the coverage order (rank 0 gets the longest vector).
        if order == "frequent_long":
            rank = torch.arange(num_embeddings)
        elif order == "rare_long":
            rank = torch.arange(num_embeddings - 1, -1, -1)
        else:
            rank = torch.randperm(num_embeddings, generator=torch.Generator().manual_seed(seed))
        self.register_buffer("rank", rank.to(device), persistent=True)
        self.identity_order = order == "frequent_long"
        factory = {"device": device, "dtype": dtype}
        self.blocks = nn.ParameterList(
            nn.Parameter(torch.empty(w * r + p, **factory))
            for w, r, p in zip(self.allocation.widths, self.allocation.rows, self.allocation.partial, strict=True)
        )
        self.reset_parameters()

    @property
    def words_per_block(self) -> tuple[int, ...]:
        return self.allocation.words

    @property
    def block_widths(self) -> tuple[int, ...]:
        return self.allocation.widths

    def reset_parameters(self) -> None:
        for block in self.blocks:
            nn.init.normal_(block)  # the same N(0, 1) as torch.nn.Embedding

    def extra_repr(self) -> str:
        return (
            f"{self.num_embeddings}, {self.embedding_dim}, blocks={len(self.blocks)}, density={self.density}, "
            f"order={self.order!r}, words_per_block={list(self.words_per_block)}"
        )

    def _table(self, b: int, padding_row: bool) -> Tensor:
        """Block b as a (words, width) table, the partial row zero-filled, plus an all-zero row if asked."""
        width = self.allocation.widths[b]
        flat = self.blocks[b]
        missing = (width - self.allocation.partial[b]) % width + (width if padding_row else 0)
        if missing:
            flat = torch.cat([flat, flat.new_zeros(missing)])
        return flat.view(-1, width)

    def forward(self, ids: Tensor) -> Tensor:
        ranks = ids if self.identity_order else self.rank[ids]
        parts = []
        for b, words in enumerate(self.allocation.words):
            table = self._table(b, padding_row=True)  # row `words` is zeros: where uncovered words look up
            parts.append(F.embedding(torch.clamp(ranks, max=words), table))
        return torch.cat(parts, -1)

    def decode(self, hidden: Tensor) -> Tensor:
        """Tied output layer: logits ``hidden @ E.T`` over the whole vocabulary, computed block by block."""
        if hidden.size(-1) != self.embedding_dim:
            raise ValueError(f"hidden has {hidden.size(-1)} features, expected embedding_dim={self.embedding_dim}")
        start = 0
        logits = None
        for b, (width, words) in enumerate(zip(self.allocation.widths, self.allocation.words, strict=True)):
            part = hidden[..., start : start + width] @ self._table(b, padding_row=False).t()
            start += width
            if logits is None:  # block 0 covers every word
                logits = part
            elif words:
                logits[..., :words] += part
        return logits if self.identity_order else logits[..., self.rank]

    def dense_parameter_count(self) -> int:
        """Entries of the dense V x d table this module stands for."""
        return self.num_embeddings * self.embedding_dim

    def dense_equivalent(self) -> dict[str, tuple[Tensor, Tensor]]:
        """``{"weight": (V x d weight, 0/1 mask)}`` in token-id order, as ``torch.nn.Embedding`` would hold it."""
        with torch.no_grad():
            reference = self.blocks[0]
            weight = reference.new_zeros(self.num_embeddings, self.embedding_dim)
            mask = torch.zeros_like(weight)
            start = 0
            for b, width in enumerate(self.allocation.widths):
                table = self._table(b, padding_row=False)
                words = table.shape[0]
                weight[:words, start : start + width] = table
                covered = torch.ones(words * width, dtype=weight.dtype, device=weight.device)
                covered[self.blocks[b].numel() :] = 0
                mask[:words, start : start + width] = covered.view(words, width)
                start += width
            return {"weight": (weight[self.rank].clone(), mask[self.rank].clone())}
