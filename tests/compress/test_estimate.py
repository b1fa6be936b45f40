"""compress.estimate against numbers counted by hand for the adding problem's small ReLU RNN."""

from __future__ import annotations

import pytest

from compress.estimate import estimate
from compress.spec import Recipe


def adding(method: dict) -> Recipe:
    return Recipe.model_validate(
        {
            "task": {"type": "adding", "sequence_length": 10},
            "model": {"cell": "rnn_relu", "hidden_size": 16},
            "method": method,
            "training": {"batch_size": 4, "optimizer": "adam"},
        }
    )


def test_dense_recipe_by_hand():
    # RNN 2 -> 16: W_ih 32, W_hh 256, two biases 32; readout Linear(16 -> 1): 16 + 1.
    result = estimate(adding({"type": "dense"}))
    assert result.parameters == result.nonzero_parameters == 32 + 256 + 32 + 17
    assert result.dense_checkpoint_bytes == result.checkpoint_bytes == 4 * 337
    assert result.flops_per_token == 2 * (32 + 256 + 16)  # the matrices applied to each token
    assert result.flops_per_step == 3 * result.flops_per_token * 4 * 10  # batch 4 x 10 steps, fwd + bwd


def test_pruned_recipe_by_hand():
    result = estimate(adding({"type": "magnitude_pruning", "target_sparsity": 0.5}))
    kept = 16 + 128 + 8  # half of each matrix
    assert result.nonzero_parameters == kept + 32 + 1
    assert result.flops_per_token == 2 * kept
    assert result.checkpoint_bytes == 4 * 33 + 5 * kept  # biases dense; kept values + about one position byte


def test_predefined_recipe_counts_the_dense_model_it_stands_for():
    # k = 2 halves W_hh (two 8x8 blocks) and, at density 0.5, reads one input feature per component.
    result = estimate(adding({"type": "predefined", "recurrent": {"components": 2, "input_density": 0.5}}))
    sparse = 16 + 128 + 32 + 17
    assert result.parameters == sparse
    assert result.dense_checkpoint_bytes == 4 * 337
    assert result.flops_per_token == 2 * (16 + 128 + 16)
    assert result.checkpoint_bytes == pytest.approx(4 * sparse)
