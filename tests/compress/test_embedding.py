"""Predefined-sparse embeddings (METHODS.md 1b): block allocation and the SparseEmbedding module.

Expectations are independent of the code under test: budgets in integer arithmetic, alpha by our own bisection,
hand-worked tables, a dense torch.nn.Embedding / dense matmul as the reference, and structural properties of the mask.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn

from compress.predefined.embedding import BlockAllocation, SparseEmbedding, allocate_blocks
from compress.vocab import build_vocabulary

ORDERS = ("frequent_long", "rare_long", "random")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These tensors are tiny: intra-op threads only add synchronisation cost (tens of ms a step on a busy CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- independent helpers --------------------------------------------------------------------------------------------


def geometric_ratio(blocks: int, density: float) -> float:
    """alpha in [0, 1] with (1/B) * sum_{b<B} alpha^b == density, by bisection (the left side grows with alpha)."""
    low, high = 0.0, 1.0
    for _ in range(200):
        mid = (low + high) / 2
        if sum(mid**b for b in range(blocks)) / blocks < density:
            low = mid
        else:
            high = mid
    return (low + high) / 2


@st.composite
def allocation_args(draw, max_words: int = 3000, max_dim: int = 64):
    """(V, d, B, numerator, denominator) with density = numerator/denominator at least width0/d, so it is valid.

    Density is a fraction so the budget floor(V*d*density) can be computed exactly in integers.
    """
    words = draw(st.integers(1, max_words))
    dim = draw(st.integers(1, max_dim))
    blocks = draw(st.integers(1, dim))
    width0 = dim // blocks
    denominator = draw(st.integers(1, 1000))
    numerator = draw(st.integers(math.ceil(width0 * denominator / dim), denominator))
    return words, dim, blocks, numerator, denominator


def dims_per_word(module: SparseEmbedding) -> torch.Tensor:
    _, mask = module.dense_equivalent()["weight"]
    return mask.sum(1)


def column_starts(widths) -> list[int]:
    starts = [0]
    for w in widths:
        starts.append(starts[-1] + w)
    return starts


def trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# --- allocate_blocks: hand-worked examples --------------------------------------------------------------------------


def test_allocation_whole_rows_hand_worked():
    # V=10, d=4, B=2, density 0.75: budget 30; widths (2, 2); block 0 takes 10*2 = 20, block 1 the last 10 = 5 words.
    allocation = allocate_blocks(10, 4, 2, 0.75)
    assert allocation == BlockAllocation(widths=(2, 2), rows=(10, 5), partial=(0, 0))
    assert allocation.words == (10, 5)
    assert allocation.parameters == 30


def test_allocation_partial_row_in_the_last_block_hand_worked():
    # V=3, d=4, B=2, density 0.75: budget 9; block 0 takes 6; 3 left for width 2 = one full row and one entry.
    allocation = allocate_blocks(3, 4, 2, 0.75)
    assert allocation == BlockAllocation(widths=(2, 2), rows=(3, 1), partial=(0, 1))
    assert allocation.words == (3, 2)
    assert allocation.parameters == 9


def test_allocation_partial_row_in_a_middle_block_hand_worked():
    # V=5, d=6, B=3, density 11/30: budget 11; block 0 takes 10; the single entry left is a partial row of block 1.
    allocation = allocate_blocks(5, 6, 3, 11 / 30)
    assert allocation == BlockAllocation(widths=(2, 2, 2), rows=(5, 0, 0), partial=(0, 1, 0))
    assert allocation.words == (5, 1, 0)


def test_allocation_last_block_takes_the_leftover_width():
    allocation = allocate_blocks(7, 10, 3, 1.0)  # widths 3, 3 and 10 - 6 = 4
    assert allocation.widths == (3, 3, 4)
    assert allocation.rows == (7, 7, 7)
    assert allocation.parameters == 70


def test_allocation_at_the_minimum_density_is_block_zero_only():
    allocation = allocate_blocks(100, 8, 4, 0.25)
    assert allocation.rows == (100, 0, 0, 0)
    assert allocation.words == (100, 0, 0, 0)


@pytest.mark.parametrize(
    ("words", "dim", "blocks", "density"),
    [(0, 4, 2, 0.5), (4, 0, 1, 0.5), (4, 4, 0, 0.5), (4, 4, 5, 0.5), (4, 4, 2, 0.0), (4, 4, 2, -0.1), (4, 4, 2, 1.01)],
)
def test_allocation_rejects_bad_arguments(words, dim, blocks, density):
    with pytest.raises(ValueError):
        allocate_blocks(words, dim, blocks, density)


# --- allocate_blocks: properties ------------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(allocation_args())
def test_allocation_invariants(args):
    words, dim, blocks, numerator, denominator = args
    allocation = allocate_blocks(words, dim, blocks, numerator / denominator)
    budget = words * dim * numerator // denominator  # floor(V * d * density), exact

    width = dim // blocks
    assert allocation.widths == (width,) * (blocks - 1) + (dim - width * (blocks - 1),)
    assert sum(allocation.widths) == dim
    assert len(allocation.rows) == len(allocation.partial) == blocks

    total = sum(w * r + p for w, r, p in zip(allocation.widths, allocation.rows, allocation.partial, strict=True))
    assert total == budget
    assert allocation.parameters == budget

    assert allocation.rows[0] == words and allocation.partial[0] == 0  # block 0 covers every word
    for b in range(1, blocks):
        assert allocation.rows[b] <= allocation.rows[b - 1]
        # Nested: every word touched by block b has a full row in block b-1.
        assert allocation.rows[b] + (allocation.partial[b] > 0) <= allocation.rows[b - 1]
    assert all(0 <= p < w for p, w in zip(allocation.partial, allocation.widths, strict=True))
    assert sum(p > 0 for p in allocation.partial) <= 1
    assert allocation.words == tuple(r + (p > 0) for r, p in zip(allocation.rows, allocation.partial, strict=True))


@settings(max_examples=100, deadline=None)
@given(allocation_args())
def test_allocation_rejects_density_below_what_block_zero_needs(args):
    words, dim, blocks, _, denominator = args
    width0 = dim // blocks
    assume(width0 < dim)  # with one block (or width0 == d) every valid density already suffices
    # The largest numerator with numerator/denominator < width0/dim.
    numerator = math.ceil(width0 * denominator / dim) - 1
    assume(numerator >= 1)
    with pytest.raises(ValueError, match="density"):
        allocate_blocks(words, dim, blocks, numerator / denominator)


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 3000), st.integers(1, 64), st.data())
def test_full_density_fills_every_block(words, dim, data):
    blocks = data.draw(st.integers(1, dim))
    allocation = allocate_blocks(words, dim, blocks, 1.0)
    assert allocation.rows == (words,) * blocks
    assert allocation.partial == (0,) * blocks


@pytest.mark.parametrize(
    ("words", "dim", "blocks", "density"),
    [(10_000, 20, 20, 0.25), (20_000, 32, 8, 0.4), (50_000, 16, 4, 0.6), (3_000, 10, 5, 0.5), (10_000, 20, 4, 0.3)],
)
def test_words_per_block_follow_the_geometric_law(words, dim, blocks, density):
    assert dim % blocks == 0  # equal widths
    alpha = geometric_ratio(blocks, density)
    assert abs(sum(alpha**b for b in range(blocks)) / blocks - density) < 1e-12
    allocation = allocate_blocks(words, dim, blocks, density)
    for b, got in enumerate(allocation.words):
        expected = words * alpha**b
        assert abs(got - expected) <= 0.02 * expected + 1, (b, got, expected)


# --- SparseEmbedding: hand-worked layout ----------------------------------------------------------------------------


def test_hand_worked_table_with_a_partial_row():
    # V=3, d=4, B=2, density 0.75 (allocation above): block 0 holds 3 rows of 2, block 1 one row of 2 plus 1 entry.
    module = SparseEmbedding(3, 4, blocks=2, density=0.75, dtype=torch.float64)
    with torch.no_grad():
        module.blocks[0].copy_(torch.tensor([1.0, 2, 3, 4, 5, 6]))
        module.blocks[1].copy_(torch.tensor([7.0, 8, 9]))
    expected = torch.tensor([[1.0, 2, 7, 8], [3, 4, 9, 0], [5, 6, 0, 0]], dtype=torch.float64)
    assert torch.equal(module(torch.tensor([0, 1, 2])), expected)
    weight, mask = module.dense_equivalent()["weight"]
    assert torch.equal(weight, expected)
    assert torch.equal(mask, torch.tensor([[1.0, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.float64))
    hidden = torch.tensor([[1.0, 0, 0, 1], [0, 1, 1, 0]], dtype=torch.float64)
    assert torch.equal(module.decode(hidden), torch.tensor([[9.0, 3, 5], [9, 13, 6]], dtype=torch.float64))

    reversed_module = SparseEmbedding(3, 4, blocks=2, density=0.75, order="rare_long", dtype=torch.float64)
    with torch.no_grad():
        reversed_module.blocks[0].copy_(torch.tensor([1.0, 2, 3, 4, 5, 6]))
        reversed_module.blocks[1].copy_(torch.tensor([7.0, 8, 9]))
    assert torch.equal(reversed_module(torch.tensor([2, 1, 0])), expected)


# --- SparseEmbedding: agreement with the dense formulation ----------------------------------------------------------


@st.composite
def module_args(draw):
    words, dim, blocks, numerator, denominator = draw(allocation_args(max_words=60, max_dim=12))
    order = draw(st.sampled_from(ORDERS))
    seed = draw(st.integers(0, 2**16))
    return words, dim, blocks, numerator / denominator, order, seed


@settings(max_examples=60, deadline=None)
@given(module_args())
def test_forward_equals_a_dense_embedding_with_the_dense_equivalent_weight(args):
    words, dim, blocks, density, order, seed = args
    torch.manual_seed(seed)
    module = SparseEmbedding(words, dim, blocks, density, order, seed=seed, dtype=torch.float64)
    weight, mask = module.dense_equivalent()["weight"]
    assert weight.shape == mask.shape == (words, dim)
    assert torch.equal(weight * mask, weight)  # nothing outside the mask
    dense = nn.Embedding(words, dim, dtype=torch.float64)
    with torch.no_grad():
        dense.weight.copy_(weight)
    ids = torch.randint(0, words, (3, 7))
    assert torch.equal(module(ids), dense(ids))
    everyone = torch.arange(words)
    assert torch.equal(module(everyone), weight)


@settings(max_examples=60, deadline=None)
@given(module_args())
def test_decode_is_the_tied_dense_output_layer(args):
    words, dim, blocks, density, order, seed = args
    torch.manual_seed(seed)
    module = SparseEmbedding(words, dim, blocks, density, order, seed=seed, dtype=torch.float64)
    weight, _ = module.dense_equivalent()["weight"]
    hidden = torch.randn(2, 5, dim, dtype=torch.float64)
    logits = module.decode(hidden)
    assert logits.shape == (2, 5, words)
    torch.testing.assert_close(logits, hidden @ weight.T, rtol=1e-12, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(module_args())
def test_mask_matches_the_allocation(args):
    words, dim, blocks, density, order, seed = args
    module = SparseEmbedding(words, dim, blocks, density, order, seed=seed)
    _, mask = module.dense_equivalent()["weight"]
    allocation = module.allocation
    budget = math.floor(words * dim * density + 1e-9)
    assert int(mask.sum()) == budget == trainable(module)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    starts = column_starts(module.block_widths)
    for b in range(blocks):
        columns = mask[:, starts[b] : starts[b + 1]]
        touched = columns.sum(1) > 0
        full = columns.sum(1) == module.block_widths[b]
        assert int(touched.sum()) == module.words_per_block[b] == allocation.words[b]
        assert int(full.sum()) == allocation.rows[b]
        if order == "frequent_long":  # block b covers exactly the words ranked first
            assert touched[: allocation.words[b]].all() and not touched[allocation.words[b] :].any()
        elif order == "rare_long":
            assert touched[words - allocation.words[b] :].all() and not touched[: words - allocation.words[b]].any()
        # Within a word, the entries it has in a block are the first ones (a partial row is a prefix).
        assert torch.equal(columns, columns.cummin(1).values)


@settings(max_examples=40, deadline=None)
@given(module_args())
def test_one_sgd_step_equals_a_masked_dense_sgd_step(args):
    words, dim, blocks, density, order, seed = args
    torch.manual_seed(seed)
    module = SparseEmbedding(words, dim, blocks, density, order, seed=seed, dtype=torch.float64)
    weight0, mask = module.dense_equivalent()["weight"]
    mixing = torch.randn(dim, dim, dtype=torch.float64)
    ids = torch.randint(0, words, (4, 6))
    targets = torch.randint(0, words, (4, 6))

    def loss_of(embed, decode):
        vectors = embed(ids)
        logits = decode(torch.tanh(vectors @ mixing))
        return F.cross_entropy(logits.reshape(-1, words), targets.reshape(-1)) + 0.1 * vectors.pow(2).sum()

    dense_weight = weight0.clone().requires_grad_(True)
    dense_loss = loss_of(lambda i: F.embedding(i, dense_weight), lambda h: h @ dense_weight.T)
    dense_loss.backward()
    lr = 0.3
    expected = weight0 - lr * dense_weight.grad * mask

    sparse_loss = loss_of(module, module.decode)
    torch.testing.assert_close(sparse_loss, dense_loss.detach(), rtol=1e-12, atol=1e-12)
    sparse_loss.backward()
    torch.optim.SGD(module.parameters(), lr=lr).step()
    weight1, mask1 = module.dense_equivalent()["weight"]
    torch.testing.assert_close(weight1, expected, rtol=1e-12, atol=1e-12)
    assert torch.equal(mask1, mask)


def test_the_dense_gradient_does_reach_masked_entries():
    """Guards the SGD test above: the mask really removes gradient, so agreeing with a *masked* step means something."""
    torch.manual_seed(0)
    module = SparseEmbedding(30, 8, 4, 0.5, dtype=torch.float64)
    weight, mask = module.dense_equivalent()["weight"]
    weight = weight.clone().requires_grad_(True)
    (torch.randn(5, 8, dtype=torch.float64) @ weight.T).pow(2).sum().backward()
    assert (weight.grad * (1 - mask)).abs().sum() > 0


@pytest.mark.parametrize("order", ORDERS)
def test_masked_entries_stay_zero_under_adam(order):
    torch.manual_seed(1)
    words, dim = 50, 12
    module = SparseEmbedding(words, dim, blocks=4, density=0.45, order=order, seed=5, dtype=torch.float64)
    weight0, mask0 = module.dense_equivalent()["weight"]
    assert 0 < mask0.mean() < 1
    optimizer = torch.optim.Adam(module.parameters(), lr=0.05)
    for _ in range(5):
        ids = torch.randint(0, words, (8, 5))
        vectors = module(ids)
        loss = F.cross_entropy(module.decode(vectors).reshape(-1, words), ids.reshape(-1)) + vectors.abs().sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    weight, mask = module.dense_equivalent()["weight"]
    assert torch.equal(mask, mask0)
    assert torch.equal(weight[mask == 0], torch.zeros(int((mask == 0).sum()), dtype=torch.float64))
    assert torch.equal(module(torch.arange(words)) * (1 - mask), torch.zeros(words, dim, dtype=torch.float64))
    assert not torch.equal(weight, weight0)  # it did train


# --- SparseEmbedding: orders --------------------------------------------------------------------------------------


def test_dims_per_word_by_order():
    words, dim, blocks, density = 200, 16, 8, 0.4
    frequent = dims_per_word(SparseEmbedding(words, dim, blocks, density, "frequent_long"))
    rare = dims_per_word(SparseEmbedding(words, dim, blocks, density, "rare_long"))
    random_a = dims_per_word(SparseEmbedding(words, dim, blocks, density, "random", seed=3))
    random_b = dims_per_word(SparseEmbedding(words, dim, blocks, density, "random", seed=3))
    random_c = dims_per_word(SparseEmbedding(words, dim, blocks, density, "random", seed=4))

    assert (frequent[:-1] >= frequent[1:]).all()  # non-increasing in token id
    assert frequent[0] == dim and frequent[-1] < dim
    assert (rare[:-1] <= rare[1:]).all()
    assert torch.equal(rare, frequent.flip(0))
    assert torch.equal(random_a.sort().values, frequent.sort().values)  # the same lengths, shuffled
    assert torch.equal(random_a, random_b)
    assert not torch.equal(random_a, random_c)
    assert not torch.equal(random_a, frequent)
    assert frequent.sum() == math.floor(words * dim * density)


def test_random_order_same_seed_same_model_given_the_same_initialisation():
    torch.manual_seed(7)
    first = SparseEmbedding(40, 6, 3, 0.5, "random", seed=11)
    torch.manual_seed(7)
    second = SparseEmbedding(40, 6, 3, 0.5, "random", seed=11)
    ids = torch.arange(40)
    assert torch.equal(first(ids), second(ids))


# --- SparseEmbedding: memory and arguments --------------------------------------------------------------------------


@pytest.mark.parametrize("order", ORDERS)
def test_no_dense_table_is_held(order):
    words, dim = 1000, 16
    module = SparseEmbedding(words, dim, blocks=4, density=0.5, order=order)
    tensors = [*module.parameters(), *module.buffers(), *module.state_dict().values()]
    assert tensors
    assert all(t.numel() < words * dim for t in tensors)
    assert trainable(module) == words * dim // 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"order": "frequent-long"}, "order"),
        ({"blocks": 9}, "blocks"),
        ({"blocks": 0}, "blocks"),
        ({"density": 0.0}, "density"),
        ({"density": 1.5}, "density"),
        ({"density": 0.1}, "density"),  # below 1/4, what block 0 needs with 4 blocks of 2
    ],
)
def test_bad_arguments_are_value_errors(kwargs, message):
    args = {"num_embeddings": 20, "embedding_dim": 8, "blocks": 4, "density": 0.5, **kwargs}
    with pytest.raises(ValueError, match=message):
        SparseEmbedding(**args)


def test_decode_rejects_the_wrong_hidden_size():
    module = SparseEmbedding(20, 8, 4, 0.5)
    with pytest.raises(ValueError, match="embedding_dim"):
        module.decode(torch.zeros(3, 7))


# --- the paper's tagging configuration on the real PTB vocabulary ---------------------------------------------------


@pytest.fixture(scope="module")
def ptb_vocabulary():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)
        import treebank
    text = treebank.penn["train"]
    return build_vocabulary(t for line in text.splitlines() if line.strip() for t in (*line.split(), "<eos>"))


def test_ptb_twenty_blocks_of_one_at_quarter_density(ptb_vocabulary):
    words = len(ptb_vocabulary)
    assert words == 10_000
    module = SparseEmbedding(words, 20, blocks=20, density=0.25)
    dims = dims_per_word(module)
    assert trainable(module) == int(dims.sum()) == 50_000  # the parameters of a dense 5-D table
    assert dims.mean().item() == 5.0
    assert dims[ptb_vocabulary.id("the")] == 20
    assert dims[-1] == 1
    # Frequent words long: a word never has fewer dimensions than a rarer one.
    counts = torch.tensor(ptb_vocabulary.counts)
    assert (counts[:-1] >= counts[1:]).all()
    assert (dims[:-1] >= dims[1:]).all()
    alpha = geometric_ratio(20, 0.25)
    for b, got in enumerate(module.words_per_block):
        assert abs(got - words * alpha**b) <= 0.02 * words * alpha**b + 1
