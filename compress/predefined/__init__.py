"""Predefined sparsity: recurrent layers and embeddings that are sparse from the first training step."""

from compress.predefined.embedding import BlockAllocation, SparseEmbedding, allocate_blocks
from compress.predefined.layout import LayerLayout, input_windows, split_hidden
from compress.predefined.planner import RecurrentPlan, dense_parameter_count, plan_recurrent
from compress.predefined.recurrent import SparseGRU, SparseLSTM, SparseRecurrent, SparseRNN

__all__ = [
    "BlockAllocation",
    "LayerLayout",
    "RecurrentPlan",
    "SparseEmbedding",
    "SparseGRU",
    "SparseLSTM",
    "SparseRNN",
    "SparseRecurrent",
    "allocate_blocks",
    "dense_parameter_count",
    "input_windows",
    "plan_recurrent",
    "split_hidden",
]
