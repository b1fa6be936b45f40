"""A user's own model through a job: the weights fit the contract, the vocabulary is kept as given, and the metric
the job reports is what a plain PyTorch evaluation of the same weights gives."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import compress
from compress.spec import Recipe
from compress.weights import compare_weights, describe_weights, weight_contract

WORDS = [f"w{i}" for i in range(40)]


class UserLM(nn.Module):
    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, 8)
        self.rnn = nn.LSTM(8, 12)
        self.decoder = nn.Linear(12, vocab)

    def forward(self, tokens):
        return self.decoder(self.rnn(self.embedding(tokens))[0])


@pytest.fixture
def corpus(tmp_path):
    rng = random.Random(0)
    zipf = [1 / (i + 1) for i in range(len(WORDS))]
    lines = [" ".join(rng.choices(WORDS, zipf, k=rng.randint(3, 9))) for _ in range(300)]
    (tmp_path / "train.txt").write_text("\n".join(lines[:250]) + "\n")
    (tmp_path / "valid.txt").write_text("\n".join(lines[250:]) + "\n")
    return tmp_path


def plain_perplexity(model: nn.Module, path, vocab: list[str], columns: int = 10) -> float:
    """An independent evaluation: the validation text with <eos> after each line, cut into ``columns`` streams (as
    the service evaluates), each run through the model at once (a carried state over chunks is the same thing)."""
    index = {t: i for i, t in enumerate(vocab)}
    ids = [index.get(t, index["<unk>"]) for line in path.read_text().splitlines() for t in [*line.split(), "<eos>"]]
    rows = len(ids) // columns
    data = torch.tensor(ids[: rows * columns]).view(columns, rows).t()
    with torch.no_grad():
        logits = model(data[:-1])
        loss = nn.functional.cross_entropy(logits.reshape(-1, len(vocab)), data[1:].reshape(-1))
    return math.exp(loss.item())


def test_a_users_vocabulary_and_weights_survive_a_job(corpus, tmp_path):
    vocabulary = sorted([*WORDS, "<eos>", "<unk>"], reverse=True)  # not the frequency order sparseq would build
    torch.manual_seed(0)
    user = UserLM(len(vocabulary))
    weights = tmp_path / "mine.safetensors"
    save_file(
        {k: v.contiguous() for k, v in user.state_dict().items()}, str(weights), {"vocabulary": json.dumps(vocabulary)}
    )
    recipe = Recipe.model_validate(
        {
            "task": {"type": "language_model"},
            "model": {"cell": "lstm", "embedding_size": 8, "hidden_size": 12},
            "method": {"type": "magnitude_pruning", "target_sparsity": 0.5},
            "training": {"epochs": 1, "batch_size": 4, "bptt": 10, "evaluations": 1},
            "init_from": "mine",
        }
    )
    info = describe_weights(weights)
    assert info.vocabulary == vocabulary
    assert not compare_weights(weight_contract(recipe, {"vocab_size": len(vocabulary)}), info.tensors)
    data = {"train": corpus / "train.txt", "valid": corpus / "valid.txt", "init_from": weights}
    result = compress.run(recipe, data, output_dir=tmp_path / "out", device="cpu")
    # The reference is the user's model as they gave it, evaluated by a plain loop with their own ids.
    assert result.verdict["reference_kind"] == "initial_weights"
    assert result.verdict["reference"] == pytest.approx(
        plain_perplexity(user, corpus / "valid.txt", vocabulary), rel=1e-4
    )
    # The output keeps their vocabulary, and the pruned weights load into their own class and give the job's metric.
    model, manifest = compress.load_checkpoint(result.checkpoint)
    assert manifest["vocabulary"] == vocabulary
    pruned = UserLM(len(vocabulary))
    pruned.load_state_dict(model.state_dict())
    measured = plain_perplexity(pruned, corpus / "valid.txt", vocabulary)
    assert result.metrics["valid_perplexity"] == pytest.approx(measured, rel=1e-4)


def test_predefined_embeddings_keep_the_users_ids(corpus, tmp_path):
    vocabulary = sorted([*WORDS, "<eos>", "<unk>"], reverse=True)
    (tmp_path / "vocab.txt").write_text("\n".join(vocabulary) + "\n")
    recipe = Recipe.model_validate(
        {
            "task": {"type": "language_model"},
            "model": {"cell": "lstm", "embedding_size": 8, "hidden_size": 12},
            "method": {"type": "predefined", "embedding": {"blocks": 4, "density": 0.5}},
            "training": {"epochs": 1, "batch_size": 4, "bptt": 10, "evaluations": 1},
            "reference": "none",
        }
    )
    data = {"train": corpus / "train.txt", "valid": corpus / "valid.txt", "vocabulary": tmp_path / "vocab.txt"}
    result = compress.run(recipe, data, output_dir=tmp_path / "out", device="cpu")
    model, manifest = compress.load_checkpoint(result.checkpoint)
    assert manifest["vocabulary"] == vocabulary
    counts = {w: 0 for w in vocabulary}
    for line in (corpus / "train.txt").read_text().splitlines():
        for token in [*line.split(), "<eos>"]:
            counts[token] += 1
    # The most frequent word (by hand) gets rank 0: the longest embedding, whatever its id in the user's order.
    most = max(vocabulary, key=lambda w: (counts[w], -vocabulary.index(w)))
    assert model.token_rank[vocabulary.index(most)] == 0
    assert sorted(model.token_rank.tolist()) == list(range(len(vocabulary)))
