"""The training engine on real PTB text and a generated tagging corpus: it learns, reports, cancels and resumes."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from compress.models import LanguageModel, SequenceTagger
from compress.problems.text import LanguageModelAdapter, TaggingAdapter
from compress.spec import ModelSpec, PredefinedMethod, TrainingSpec
from compress.synthetic import tagging_corpus, write_conll
from compress.train import Callbacks, Cancelled, Diverged, train

PREDEFINED = PredefinedMethod.model_validate({"recurrent": {"components": 2, "input_density": 0.5}})


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small models: threads only add contention on a shared machine
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ptb_files(tmp_path_factory, ptb):
    directory = tmp_path_factory.mktemp("ptb")
    train_lines = ptb["train"].splitlines()[:3000]
    valid_lines = ptb["valid"].splitlines()[:300]
    (directory / "train.txt").write_text("\n".join(train_lines) + "\n")
    (directory / "valid.txt").write_text("\n".join(valid_lines) + "\n")
    return directory / "train.txt", directory / "valid.txt", train_lines, valid_lines


@pytest.fixture(scope="module")
def tagging_files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tags")
    corpus = tagging_corpus(700, vocab_size=400, tags=8, seed=5)
    return write_conll(directory / "train.conll", corpus[:600]), write_conll(directory / "valid.conll", corpus[600:])


def unigram_perplexity(train_lines, valid_lines, vocab) -> float:
    """An independent reference: the perplexity of add-one unigram frequencies from the training text."""
    counts = Counter(vocab.id(t) for line in train_lines for t in [*line.split(), "<eos>"])
    total = sum(counts.values()) + len(vocab)
    valid = [vocab.id(t) for line in valid_lines for t in [*line.split(), "<eos>"]]
    return math.exp(-sum(math.log((counts[i] + 1) / total) for i in valid) / len(valid))


def test_language_model_beats_unigram_frequencies(ptb_files):
    train_path, valid_path, train_lines, valid_lines = ptb_files
    torch.manual_seed(0)
    adapter = LanguageModelAdapter(train_path, valid_path, max_vocab=2000, batch_size=20, bptt=20)
    spec = ModelSpec(embedding_size=64, hidden_size=96)
    model = LanguageModel(spec, PREDEFINED, len(adapter.vocab))
    before = adapter.evaluate(model)["valid_perplexity"]
    result = train(adapter, model, TrainingSpec(epochs=2, lr=3e-3, clip=0.5), device=torch.device("cpu"))
    reference = unigram_perplexity(train_lines, valid_lines, adapter.vocab)
    assert before > 0.5 * len(adapter.vocab)  # untrained: close to uniform over the vocabulary
    assert result.metrics["valid_perplexity"] < 0.9 * reference, (result.metrics, reference)
    assert [h["epoch"] for h in result.history if h["epoch_end"]] == [1, 2]
    steps = [h["step"] for h in result.history]  # ten evaluations over the run, inside the epochs too
    assert 10 <= len(steps) <= 12 and steps == sorted(steps) and steps[-1] == 2 * adapter.steps_per_epoch


def test_tagger_beats_the_most_frequent_tag_per_word(tagging_files):
    train_path, valid_path = tagging_files
    torch.manual_seed(0)
    adapter = TaggingAdapter(train_path, valid_path, batch_size=20)
    spec = ModelSpec(embedding_size=16, hidden_size=16, bidirectional=True)
    model = SequenceTagger(spec, PREDEFINED, len(adapter.vocab), adapter.num_tags)
    result = train(adapter, model, TrainingSpec(epochs=6, lr=1e-2), device=torch.device("cpu"))
    # Reference: tag each word with the tag it most often had in training (an HMM's context should help beyond it).
    from compress.data import read_tagging_conll

    seen: dict[str, Counter] = {}
    for words, tags in read_tagging_conll(train_path):
        for w, t in zip(words, tags, strict=True):
            seen.setdefault(w, Counter())[t] += 1
    overall = Counter(t for _, tags in read_tagging_conll(train_path) for t in tags).most_common(1)[0][0]
    valid = read_tagging_conll(valid_path)
    hits = sum(
        (seen[w].most_common(1)[0][0] if w in seen else overall) == t
        for words, tags in valid
        for w, t in zip(words, tags, strict=True)
    )
    baseline = hits / sum(len(tags) for _, tags in valid)
    assert result.metrics["valid_accuracy"] > baseline - 0.02, (result.metrics, baseline)
    assert result.metrics["valid_accuracy"] > 0.5


def _lm_run(ptb_files, callbacks):
    train_path, valid_path, _, _ = ptb_files
    torch.manual_seed(0)
    adapter = LanguageModelAdapter(train_path, valid_path, max_vocab=500, batch_size=40, bptt=35)
    spec = ModelSpec(embedding_size=16, hidden_size=24, dropout=0.2, num_layers=2)
    model = LanguageModel(spec, PREDEFINED, len(adapter.vocab))
    training = TrainingSpec(epochs=2, lr=5e-3, lr_schedule="plateau")
    return model, train(adapter, model, training, callbacks=callbacks, device=torch.device("cpu")), adapter


def test_resume_after_a_cancel_gives_the_uninterrupted_result(ptb_files, tmp_path):
    reference_model, reference, _ = _lm_run(ptb_files, Callbacks())
    steps = reference.steps
    stop_at = steps // 2 + 3  # mid-epoch 2, between two state saves
    calls = {"n": 0}

    def cancel_once() -> bool:
        calls["n"] += 1
        return calls["n"] == stop_at + 1

    state = tmp_path / "state.pt"
    with pytest.raises(Cancelled):
        _lm_run(ptb_files, Callbacks(cancelled=cancel_once, state_path=state, state_every=5))
    assert state.exists()
    resumed_model, resumed, _ = _lm_run(ptb_files, Callbacks(state_path=state, state_every=5))
    assert resumed.resumed_from_step == stop_at // 5 * 5
    assert resumed.steps == steps
    assert resumed.history == reference.history
    for (name, a), (_, b) in zip(reference_model.state_dict().items(), resumed_model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_progress_is_reported_and_ends_at_one(ptb_files):
    reports, events = [], []
    callbacks = Callbacks(progress=reports.append, event=lambda *args: events.append(args), progress_every=0.0)
    _, result, _ = _lm_run(ptb_files, callbacks)
    fractions = [r.fraction for r in reports]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert len(reports) >= result.steps
    assert [e[1] for e in events].count("metrics") == len(result.history)  # one event per evaluation
    progress = [e[3] for e in events if e[1] == "progress"]
    assert 15 <= len(progress) <= 20  # Callbacks.events = 20 over the run (the last step is the final report)
    assert all(p["phase"] == "train" and p["seconds_left"] >= 0 and p["step"] < result.steps for p in progress)
    assert reports[-1].evaluation == result.history[-1]  # the final report carries the latest evaluation


def test_time_budget_stops_early_and_keeps_the_model(ptb_files):
    train_path, valid_path, _, _ = ptb_files
    adapter = LanguageModelAdapter(train_path, valid_path, max_vocab=500)
    model = LanguageModel(ModelSpec(embedding_size=16, hidden_size=16), PREDEFINED, len(adapter.vocab))
    events = []
    result = train(
        adapter,
        model,
        TrainingSpec(epochs=50, time_budget_s=0.5),
        callbacks=Callbacks(event=lambda *a: events.append(a)),
        device=torch.device("cpu"),
    )
    assert result.stopped_by_time_budget and result.steps < 50 * adapter.steps_per_epoch
    assert "valid_perplexity" in result.metrics
    assert any("time budget" in e[2] for e in events)


def test_held_out_split_without_a_validation_file(ptb_files):
    train_path, _, train_lines, _ = ptb_files
    adapter = LanguageModelAdapter(train_path, max_vocab=500)
    assert adapter.held_out
    held = math.ceil(len(train_lines) * 0.1)
    expected_tokens = sum(len(line.split()) + 1 for line in train_lines[-held:])
    assert adapter.valid_data.numel() == expected_tokens // 10 * 10


def test_a_non_finite_loss_stops_with_a_clear_message():
    class Exploding:
        metric, lower_is_better, steps_per_epoch = "valid_loss", True, 4

        def batches(self, epoch):
            yield from range(self.steps_per_epoch)

        def start_epoch(self, epoch):
            pass

        def loss(self, model, batch):
            scale = float("inf") if batch == 2 else 1.0  # the third step blows up
            return (model(torch.ones(1, 3)) * scale).sum()

        def evaluate(self, model):
            return {"valid_loss": 0.0}

        def state_dict(self):
            return {}

        def load_state_dict(self, state):
            pass

    with pytest.raises(Diverged, match=r"the loss became inf at step 3 \(epoch 1\)") as raised:
        train(Exploding(), torch.nn.Linear(3, 1), TrainingSpec(epochs=1), device=torch.device("cpu"))
    assert raised.value.code == "diverged"
