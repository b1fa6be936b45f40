"""Magnitude pruning: exact counts, largest magnitudes kept, masks that hold through optimizer steps, schedules."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from compress.predefined import SparseLSTM
from compress.pruning import (
    Pruner,
    PruningSchedule,
    allocate_masks,
    erk_densities,
    global_magnitude_masks,
    lottery_retrain,
    magnitude_masks,
    prunable_names,
    tensor_magnitude_mask,
)

shapes = st.lists(st.tuples(st.integers(1, 9), st.integers(1, 9)), min_size=1, max_size=4)


@settings(max_examples=60, deadline=None)
@given(shapes=shapes, sparsity=st.floats(0, 1), seed=st.integers(0, 10_000))
def test_global_masks_prune_exactly_round_s_n_smallest(shapes, sparsity: float, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    tensors = {f"t{i}": torch.randn(shape, generator=generator) for i, shape in enumerate(shapes)}
    masks = global_magnitude_masks(tensors, sparsity)
    n = sum(t.numel() for t in tensors.values())
    pruned = sum(int((~m).sum()) for m in masks.values())
    assert pruned == round(sparsity * n)
    kept = torch.cat([t[m].abs() for t, m in zip(tensors.values(), masks.values(), strict=True)])
    dropped = torch.cat([t[~m].abs() for t, m in zip(tensors.values(), masks.values(), strict=True)])
    if len(kept) and len(dropped):
        assert kept.min() >= dropped.max()
    # A second way: the kept set is exactly the n - round(s n) largest magnitudes (no ties with random normals).
    everything = torch.cat([t.flatten().abs() for t in tensors.values()])
    expected_kept = everything.sort(descending=True).values[: n - pruned]
    assert torch.equal(kept.sort(descending=True).values, expected_kept)


def test_global_scope_prunes_the_small_tensor_harder() -> None:
    tensors = {"big": torch.full((10,), 5.0) + torch.arange(10.0), "small": torch.arange(1.0, 11.0) * 0.01}
    masks = global_magnitude_masks(tensors, 0.5)
    assert not masks["small"].any() and masks["big"].all()


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 6), cols=st.integers(1, 6), gates=st.sampled_from([1, 3, 4]), sparsity=st.floats(0, 1))
def test_gate_scope_prunes_each_gate_block_to_the_target(rows: int, cols: int, gates: int, sparsity: float) -> None:
    weight = torch.randn(gates * rows, cols)
    mask = tensor_magnitude_mask(weight, sparsity, gates=gates)
    for g in range(gates):
        block = mask[g * rows : (g + 1) * rows]
        assert int((~block).sum()) == round(sparsity * rows * cols)
        if block.any() and (~block).any():
            assert (
                weight[g * rows : (g + 1) * rows][block].abs().min()
                >= weight[g * rows : (g + 1) * rows][~block].abs().max()
            )


def test_tensor_scope_prunes_each_tensor_to_the_target() -> None:
    tensors = {"a": torch.randn(10, 10), "b": torch.randn(4, 5) * 100}
    masks = magnitude_masks(tensors, 0.3, scope="tensor")
    assert int((~masks["a"]).sum()) == 30 and int((~masks["b"]).sum()) == 6


def test_masks_are_cumulative() -> None:
    weight = torch.arange(1.0, 11.0)
    first = global_magnitude_masks({"w": weight}, 0.3)  # prunes 1, 2, 3
    grown = weight.clone()
    grown[:3] = 100.0  # pruned weights that would now be the largest
    second = global_magnitude_masks({"w": grown}, 0.5, previous=first)
    assert not second["w"][:3].any()
    assert int((~second["w"]).sum()) == 5
    assert not second["w"][3:5].any()  # the next smallest: 4 and 5


@pytest.mark.parametrize("kind", ["linear", "cubic", "one_shot"])
def test_schedules_hit_the_final_sparsity_at_their_last_step(kind: str) -> None:
    schedule = PruningSchedule(0.9, kind, start=2, end=12)
    values = [schedule.sparsity(step) for step in range(16)]
    assert values[12] == 0.9 and values[15] == 0.9
    assert values[11] < 0.9
    assert values[0] == 0.0
    assert all(b >= a for a, b in itertools.pairwise(values))


def test_schedule_formulas_by_hand() -> None:
    epochs = 30  # the paper's navigation: target * e / (E - 1) at epoch e
    paper = PruningSchedule(0.9, "linear", start=0, end=epochs - 1)
    for e in range(epochs):
        assert paper.sparsity(e) == pytest.approx(0.9 * e / (epochs - 1))
    cubic = PruningSchedule(0.8, "cubic", start=0, end=10)
    assert cubic.sparsity(5) == pytest.approx(0.8 * (1 - 0.5**3))
    assert cubic.sparsity(0) == 0.0
    assert PruningSchedule(0.5, "one_shot", end=4).sparsity(3) == 0.0


def test_masked_weights_stay_exactly_zero_through_adam_on_flat_lstm_weights() -> None:
    torch.manual_seed(0)
    lstm = nn.LSTM(6, 8, num_layers=2)
    params_before = {name: id(p) for name, p in lstm.named_parameters()}
    optimizer = torch.optim.AdamW(lstm.parameters(), lr=0.05, weight_decay=0.01)
    x = torch.randn(5, 3, 6)
    for _ in range(3):  # momentum builds up before pruning, so Adam would move pruned weights
        optimizer.zero_grad()
        lstm(x)[0].square().mean().backward()
        optimizer.step()
    pruner = Pruner(lstm, scope="global").attach(optimizer)
    masks = pruner.prune(0.7)
    for _ in range(5):
        optimizer.zero_grad()
        lstm(x)[0].square().mean().backward()
        for name, mask in masks.items():
            assert torch.all(getattr(lstm, name).grad[~mask] == 0)
        optimizer.step()
    for name, mask in masks.items():
        assert torch.all(getattr(lstm, name)[~mask] == 0), name
        assert getattr(lstm, name)[mask].ne(0).all()
    # The LSTM kept its own parameter objects, so its flat weights (what the fused kernel reads) are the pruned ones.
    assert {name: id(p) for name, p in lstm.named_parameters()} == params_before
    assert all(
        a is b for a, b in zip(lstm._flat_weights, [getattr(lstm, n) for n in lstm._flat_weights_names], strict=True)
    )
    report = pruner.report()
    assert report["total"]["zeros"] == round(0.7 * report["total"]["numel"])


def test_gate_aware_pruning_of_a_packed_lstm() -> None:
    lstm = nn.LSTM(5, 6)
    with torch.no_grad():
        lstm.weight_hh_l0[:6] += 10  # the input gate is much larger than the rest
    # Globally, the big gate keeps everything and the others lose two thirds of their weights.
    global_mask = global_magnitude_masks({"w": lstm.weight_hh_l0}, 0.5)["w"]
    assert global_mask[:6].all()
    pruner = Pruner(lstm, ["weight_hh_l0"], scope="gate")
    pruner.prune(0.5)
    mask = pruner.masks["weight_hh_l0"]
    for g in range(4):
        assert int((~mask[g * 6 : (g + 1) * 6]).sum()) == 18


def test_pruner_follows_its_schedule_and_reports_achieved_sparsity() -> None:
    model = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 5))
    schedule = PruningSchedule(0.8, "cubic", start=0, end=4)
    pruner = Pruner(model, schedule=schedule)
    for step in range(6):
        target = pruner.update(step)
        report = pruner.report()
        numel = 10 * 20 + 20 * 5
        assert report["total"]["zeros"] == round(target * numel)
        for name in ("0.weight", "2.weight"):
            weight = dict(model.named_parameters())[name]
            assert report[name]["zeros"] == int((weight == 0).sum())
    assert pruner.report()["total"]["sparsity"] == pytest.approx(0.8)
    assert "0.bias" not in pruner.report()  # biases are not pruned by default


def test_masks_live_as_buffers_and_squash_bakes_them_in() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.LSTM(4, 3))
    pruner = Pruner(model)
    pruner.prune(0.6)
    assert "1.weight_hh_l0_mask" in model.state_dict()
    masks = pruner.squash()
    assert not any(key.endswith("_mask") for key in model.state_dict())
    fresh = nn.Sequential(nn.Linear(4, 4), nn.LSTM(4, 3))
    fresh.load_state_dict(model.state_dict())  # strict: a plain model again
    for name, mask in masks.items():
        assert torch.all(dict(fresh.named_parameters())[name][~mask] == 0)


def test_predefined_sparse_components_can_be_pruned() -> None:
    layer = SparseLSTM(6, 9, components=3)
    pruner = Pruner(layer, scope="gate")
    pruner.prune(0.5)
    for c in range(3):
        mask = pruner.masks[f"weight_hh_l0_c{c}"]  # (4*3, 3): each gate block of 9 entries loses round(4.5) = 4
        assert [int((~mask[g * 3 : (g + 1) * 3]).sum()) for g in range(4)] == [4] * 4


def test_lottery_retrain_reinitialises_loads_only_masks_and_retrains() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 1))
    pruner = Pruner(model)
    masks = {name: mask.clone() for name, mask in pruner.prune(0.75).items()}
    trained_weights = {name: p.detach().clone() for name, p in model.named_parameters()}
    x, y = torch.randn(32, 6), torch.randn(32, 1)

    def train(net: nn.Module, lottery_pruner: Pruner) -> float:
        # Freshly initialised (not the trained weights), with the old zero pattern already in place.
        for name, mask in masks.items():
            weight = dict(net.named_parameters())[name]
            assert torch.all(weight[~mask] == 0)
            assert not torch.equal(weight[mask], trained_weights[name][mask])
        optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
        lottery_pruner.attach(optimizer)
        for _ in range(5):
            optimizer.zero_grad()
            loss = (net(x) - y).square().mean()
            loss.backward()
            optimizer.step()
        return loss.item()

    result = lottery_retrain(model, masks, train, seed=123)
    assert isinstance(result, float)
    for name, mask in masks.items():
        assert torch.all(dict(model.named_parameters())[name][~mask] == 0)


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="sparsity"):
        global_magnitude_masks({"w": torch.ones(3)}, 1.5)
    with pytest.raises(ValueError, match="scope"):
        Pruner(nn.Linear(2, 2), scope="layer")
    with pytest.raises(ValueError, match="nope"):
        Pruner(nn.Linear(2, 2), ["nope"])
    with pytest.raises(ValueError, match="end"):
        PruningSchedule(0.9, "linear", start=5, end=2)


# -- allocation and floors (METHODS.md section 3) ---------------------------------------------------------------------


def test_erk_densities_by_hand() -> None:
    # Raw ERK scores (n_in + n_out) / (n_in * n_out): a 10x10 matrix 0.2, a 100x10 one 0.11, a 100x100 one 0.02.
    # Density 0.1 of the 11,100 entries is 1,110 kept: eps * (0.2 * 100 + 0.11 * 1000 + 0.02 * 10000) = 1110
    # gives eps = 1110 / 330 = 3.364, so densities 0.673, 0.370, 0.0673.
    shapes = {"small": (10, 10), "tall": (100, 10), "big": (100, 100)}
    densities = erk_densities(shapes, 0.1)
    eps = 1110 / 330
    assert densities == pytest.approx({"small": 0.2 * eps, "tall": 0.11 * eps, "big": 0.02 * eps})
    # At density 0.5 the small matrix would need 0.2 * eps > 1 (eps = 5550 / 330): it is kept dense; solving again,
    # eps' * (0.11 * 1000 + 0.02 * 10000) = 5550 - 100 gives eps' = 17.58 and the tall one 1.93 > 1: dense too;
    # the big one then keeps all that is left, 5550 - 1100 = 4450 of its 10,000.
    densities = erk_densities(shapes, 0.5)
    assert densities == pytest.approx({"small": 1.0, "tall": 1.0, "big": 0.445})


@settings(max_examples=40, deadline=None)
@given(
    shapes=st.lists(st.tuples(st.integers(1, 40), st.integers(1, 40)), min_size=1, max_size=4),
    sparsity=st.floats(0.0, 0.99),
    allocation=st.sampled_from(["global", "uniform", "erk"]),
    seed=st.integers(0, 1000),
)
def test_floors_hold_for_any_shapes_and_the_target_is_met_where_they_allow(shapes, sparsity, allocation, seed):
    generator = torch.Generator().manual_seed(seed)
    tensors = {f"w{i}": torch.randn(*shape, generator=generator) for i, shape in enumerate(shapes)}
    masks = allocate_masks(tensors, sparsity, allocation=allocation, floors=True).masks
    for name, mask in masks.items():
        assert mask.any(dim=1).all() and mask.any(dim=0).all(), name  # every row and every column keeps a weight
    total = sum(t.numel() for t in tensors.values())
    kept = sum(int(m.sum()) for m in masks.values())
    floor = sum(min(t.numel(), t.size(0) + t.size(1)) for t in tensors.values())  # at most a row's + a column's
    target = total - round(sparsity * total)
    # Never fewer than asked (up to one per tensor of rounding), never more than asked plus the floors.
    assert target - len(tensors) <= kept <= target + floor


def test_floors_keep_the_largest_weight_of_each_row_and_column() -> None:
    weight = torch.tensor([[0.1, 5.0, 0.2], [0.3, 4.0, 0.05], [0.01, 3.0, 0.02]])
    mask = allocate_masks({"w": weight}, 0.99, allocation="uniform", floors=True).masks["w"]
    # Rows keep their largest (column 1 each); column 0 keeps 0.3 (row 1), column 2 keeps 0.2 (row 0).
    expected = torch.tensor([[False, True, True], [True, True, False], [False, True, False]])
    assert torch.equal(mask, expected)
    allocated = allocate_masks({"w": weight}, 0.99, allocation="uniform", floors=True)
    assert allocated.at_floor == {"w"}  # 99% would keep 0 of 9: the floor kept 5


def test_min_density_and_targets() -> None:
    model = nn.Sequential(nn.Embedding(30, 4), nn.LSTM(4, 6))
    assert prunable_names(model, "recurrent") == ["1.weight_hh_l0"]
    assert prunable_names(model, "recurrent_and_input") == ["1.weight_ih_l0", "1.weight_hh_l0"]
    assert prunable_names(model, "all") == ["0.weight", "1.weight_ih_l0", "1.weight_hh_l0"]
    tensors = {"a": torch.randn(10, 10), "b": torch.randn(10, 10) * 100}  # global ranking would strip a
    masks = allocate_masks(tensors, 0.9, allocation="global", floors=False, min_density=0.05).masks
    assert int(masks["a"].sum()) == 5  # ceil(0.05 * 100): all a keeps, b's weights being larger
    assert int(masks["a"].sum()) + int(masks["b"].sum()) == 20  # 10% of the 200 entries


def test_the_paper_preset_can_prune_a_tensor_away_and_the_default_cannot() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 64), nn.Linear(64, 64))
    with torch.no_grad():
        model[0].weight.mul_(0.001)  # a small input matrix, like the navigation model's velocity input
    paper = Pruner(model, allocation="global", floors=False)
    paper.prune(0.95)
    assert int(model[0].weight.count_nonzero()) == 0
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 64), nn.Linear(64, 64))
    with torch.no_grad():
        model[0].weight.mul_(0.001)
    Pruner(model, allocation="global", floors=True).prune(0.95)
    assert bool((model[0].weight != 0).any(dim=1).all())  # every unit still reads an input
