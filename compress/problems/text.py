"""Task adapters for the text tasks: word-level language modelling and sequence tagging.

Both build their vocabulary from the training file (ids by descending frequency, so predefined-sparse embeddings
give frequent words the long vectors), unless the user gives theirs (``vocabulary``: tokens in id order, the rows of
their own embedding and decoder), which is then kept exactly: words it lacks map to ``<unk>`` (which it must then
have), and a language model needs ``<eos>`` in it. Without a validation file, the last 10% of the training sentences
are held out, and an event says so.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from compress.data import read_lm_text, read_tagging_conll
from compress.vocab import UNK, Vocabulary, build_vocabulary

EOS = "<eos>"
HELD_OUT = 0.1


def _split(sentences: list, valid: list | None) -> tuple[list, list, bool]:
    if valid is not None:
        return sentences, valid, False
    if len(sentences) < 2:
        raise ValueError("the training file needs at least 2 sentences to hold some out for validation")
    cut = max(1, math.ceil(len(sentences) * HELD_OUT))
    return sentences[:-cut], sentences[-cut:], True


def given_vocabulary(tokens: list[str], counts: dict[str, int], *, required: tuple[str, ...] = ()) -> Vocabulary:
    """The user's vocabulary, in their id order, with the training counts (0 for tokens the data never uses)."""
    missing = [t for t in required if t not in tokens]
    if missing:
        raise ValueError(f"the vocabulary has no {missing[0]!r} token, which this task needs (add it as a line)")
    present = set(tokens)
    unknown = [t for t in counts if t not in present]
    if unknown and UNK not in present:
        raise ValueError(
            f"the data has {len(unknown)} word(s) the vocabulary lacks (e.g. {unknown[0]!r}) and the vocabulary has no "
            f"{UNK!r} token to stand for them"
        )
    return Vocabulary(tuple(tokens), tuple(counts.get(t, 0) for t in tokens))


def frequency_rank(vocab: Vocabulary) -> Tensor:
    """id -> rank of its training count (0 = most frequent; ties by id): the order predefined embeddings need."""
    order = sorted(range(len(vocab)), key=lambda i: (-vocab.counts[i], i))
    rank = torch.empty(len(vocab), dtype=torch.long)
    rank[torch.tensor(order)] = torch.arange(len(vocab))
    return rank


def _detach(state):
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()


class LanguageModelAdapter:
    """Truncated back-propagation over a token stream cut into ``batch_size`` parallel columns (Zaremba et al.)."""

    metric = "valid_perplexity"
    lower_is_better = True

    def __init__(
        self,
        train_path: str | Path,
        valid_path: str | Path | None = None,
        *,
        max_vocab: int = 10_000,
        batch_size: int = 20,
        bptt: int = 35,
        eval_batch_size: int = 10,
        device: torch.device | str = "cpu",
        vocabulary: list[str] | None = None,
    ) -> None:
        train, valid, self.held_out = _split(read_lm_text(train_path), read_lm_text(valid_path) if valid_path else None)
        counts: dict[str, int] = {}
        for sentence in train:
            for token in [*sentence, EOS]:
                counts[token] = counts.get(token, 0) + 1
        if vocabulary is not None:
            for sentence in valid:  # validation words the vocabulary lacks need <unk> too
                for token in sentence:
                    counts.setdefault(token, 0)
            self.vocab: Vocabulary = given_vocabulary(vocabulary, counts, required=(EOS,))
        else:
            self.vocab = build_vocabulary(counts, max_size=max_vocab)
        self.user_vocabulary = vocabulary is not None
        self.device = torch.device(device)
        self.bptt = bptt
        self.train_data = self._columns(train, batch_size)
        self.valid_data = self._columns(valid, eval_batch_size)
        if self.train_data.size(0) < 2:
            raise ValueError(
                f"the training text is too short for batch_size {batch_size}: each of the {batch_size} columns needs "
                "at least 2 tokens"
            )
        self.steps_per_epoch = math.ceil((self.train_data.size(0) - 1) / bptt)
        self.state = None

    def _columns(self, sentences: list[list[str]], columns: int) -> Tensor:
        ids = torch.tensor(self.vocab.encode(t for s in sentences for t in [*s, EOS]), dtype=torch.long)
        rows = ids.numel() // columns
        return ids[: rows * columns].view(columns, rows).t().contiguous().to(self.device)

    def start_epoch(self, epoch: int) -> None:
        self.state = None

    def batches(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        for start in range(0, self.train_data.size(0) - 1, self.bptt):
            length = min(self.bptt, self.train_data.size(0) - 1 - start)
            yield self.train_data[start : start + length], self.train_data[start + 1 : start + 1 + length]

    def loss(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        inputs, targets = batch
        logits, state = model(inputs, self.state)
        self.state = _detach(state)
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        was_training = model.training
        model.eval()
        total, count, state = 0.0, 0, None
        data = self.valid_data
        for start in range(0, data.size(0) - 1, self.bptt):
            length = min(self.bptt, data.size(0) - 1 - start)
            logits, state = model(data[start : start + length], state)
            targets = data[start + 1 : start + 1 + length]
            total += F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="sum").item()
            count += targets.numel()
        model.train(was_training)
        loss = total / max(count, 1)
        return {"valid_loss": loss, "valid_perplexity": math.exp(min(loss, 50.0))}

    def state_dict(self) -> dict[str, Any]:
        if self.state is None:
            return {"carry": []}
        return {"carry": list(self.state) if isinstance(self.state, tuple) else [self.state]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        carry = [t.to(self.device) for t in state["carry"]]
        self.state = None if not carry else (tuple(carry) if len(carry) == 2 else carry[0])


class TaggingAdapter:
    """Sentences shuffled each epoch (seeded by seed and epoch), padded batches, token accuracy on validation."""

    metric = "valid_accuracy"
    lower_is_better = False

    def __init__(
        self,
        train_path: str | Path,
        valid_path: str | Path | None = None,
        *,
        max_vocab: int | None = None,
        batch_size: int = 20,
        seed: int = 0,
        device: torch.device | str = "cpu",
        vocabulary: list[str] | None = None,
        tags: list[str] | None = None,
    ) -> None:
        train, valid, self.held_out = _split(
            read_tagging_conll(train_path), read_tagging_conll(valid_path) if valid_path else None
        )
        if vocabulary is not None:
            counts: dict[str, int] = {}
            for tokens, _ in train:
                for token in tokens:
                    counts[token] = counts.get(token, 0) + 1
            for tokens, _ in valid:
                for token in tokens:
                    counts.setdefault(token, 0)
            self.vocab = given_vocabulary(vocabulary, counts)
        else:
            self.vocab = build_vocabulary((t for tokens, _ in train for t in tokens), max_size=max_vocab)
        self.user_vocabulary = vocabulary is not None
        seen = sorted({tag for _, labels in train for tag in labels})  # the tag ids: alphabetical unless given
        if tags is not None:
            extra = sorted(set(seen) - set(tags))
            if extra:
                raise ValueError(f"the training file uses tags the weights' tag list lacks: {extra[:5]}")
        self.tags = {tag: i for i, tag in enumerate(tags if tags is not None else seen)}
        for number, (_, labels) in enumerate(valid, start=1):
            unknown = sorted(set(labels) - set(self.tags))
            if unknown:
                raise ValueError(f"validation sentence {number} uses tags never seen in training: {unknown[:5]}")
        self.device = torch.device(device)
        self.batch_size, self.seed = batch_size, seed
        self.train = [self._encode(s) for s in train]
        self.valid = [self._encode(s) for s in valid]
        self.steps_per_epoch = math.ceil(len(self.train) / batch_size)

    @property
    def num_tags(self) -> int:
        return len(self.tags)

    def _encode(self, sentence: tuple[list[str], list[str]]) -> tuple[Tensor, Tensor]:
        tokens, labels = sentence
        return torch.tensor(self.vocab.encode(tokens)), torch.tensor([self.tags[t] for t in labels])

    def _pad(self, sentences: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor, Tensor]:
        lengths = torch.tensor([len(tokens) for tokens, _ in sentences])
        tokens = nn.utils.rnn.pad_sequence([t for t, _ in sentences])
        labels = nn.utils.rnn.pad_sequence([lab for _, lab in sentences], padding_value=-100)
        return tokens.to(self.device), lengths, labels.to(self.device)

    def start_epoch(self, epoch: int) -> None:
        pass

    def batches(self, epoch: int) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        order = torch.randperm(len(self.train), generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))
        for start in range(0, len(order), self.batch_size):
            yield self._pad([self.train[i] for i in order[start : start + self.batch_size].tolist()])

    def loss(self, model: nn.Module, batch) -> Tensor:
        tokens, lengths, labels = batch
        logits = model(tokens, lengths)
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=-100)

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        was_training = model.training
        model.eval()
        correct = total = 0
        for start in range(0, len(self.valid), 100):
            tokens, lengths, labels = self._pad(self.valid[start : start + 100])
            predicted = model(tokens, lengths).argmax(-1)
            real = labels != -100
            correct += int((predicted[real] == labels[real]).sum())
            total += int(real.sum())  # accuracy over real tokens only: the authors divided by the wrong count
        model.train(was_training)
        return {"valid_accuracy": correct / max(total, 1)}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
