"""Dataset validators and readers on real PTB text, a generated tagging corpus, and broken files."""

from __future__ import annotations

import numpy as np
import pytest

from compress.data import DataError, read_lm_text, read_tagging_conll
from compress.synthetic import tagging_corpus, write_conll
from compress.tasks import validate


def test_ptb_slice_is_valid_lm_text(ptb, tmp_path):
    lines = ptb["valid"].splitlines()[:500]
    path = tmp_path / "valid.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = validate("lm_text", path)
    assert result.ok, result.describe()
    expected_tokens = sum(len(line.split()) for line in lines)
    assert result.stats == {"sentences": sum(1 for line in lines if line.split()), "tokens": expected_tokens}
    sentences = read_lm_text(path)
    assert sum(map(len, sentences)) == expected_tokens
    assert sentences[0] == lines[0].split()


@pytest.mark.parametrize(
    ("content", "line", "reason"),
    [
        (b"the cat\nsat \xff on\nthe mat\n", 2, "not valid UTF-8"),
        (b"a b\nc\x00d\n", 2, "NUL byte"),
        (b"\n  \n", None, "no tokens"),
    ],
)
def test_broken_lm_text_names_the_first_bad_line(tmp_path, content, line, reason):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    result = validate("lm_text", path)
    assert not result.ok and result.line == line and reason in result.reason
    with pytest.raises(DataError, match=reason):
        read_lm_text(path)


def test_generated_tagging_corpus_round_trips_through_conll(tmp_path):
    corpus = tagging_corpus(200, vocab_size=500, tags=8, seed=3)
    path = write_conll(tmp_path / "train.conll", corpus)
    result = validate("tagging_conll", path)
    assert result.ok, result.describe()
    assert result.stats["sentences"] == 200
    assert result.stats["tokens"] == sum(len(words) for words, _ in corpus)
    assert read_tagging_conll(path) == corpus


def test_generated_corpus_is_zipfian_and_seeded():
    corpus = tagging_corpus(400, vocab_size=1000, seed=1)
    assert corpus == tagging_corpus(400, vocab_size=1000, seed=1)
    assert corpus != tagging_corpus(400, vocab_size=1000, seed=2)
    counts = np.bincount([int(w[1:]) for words, _ in corpus for w in words], minlength=1000)
    # Zipf: the 10 most frequent word ids carry far more than their 1% share of the tokens.
    assert counts[:10].sum() > 0.15 * counts.sum()
    assert counts[:100].mean() > 10 * counts[500:].mean()


@pytest.mark.parametrize(
    ("content", "line", "reason"),
    [
        ("the\tDT\ncat NN\n", 2, "found 1 tab-separated field"),
        ("the\tDT\tX\n", 1, "found 3 tab-separated field"),
        ("the\tDT\n \tNN\n", 2, "empty token or tag"),
    ],
)
def test_broken_conll_names_the_first_bad_line(tmp_path, content, line, reason):
    path = tmp_path / "bad.conll"
    path.write_text(content, encoding="utf-8")
    result = validate("tagging_conll", path)
    assert not result.ok and result.line == line and reason in result.reason


def _trajectories(n=4, steps=10, **replace):
    """Walks whose velocity is the displacement of each step (metres), as the format asks."""
    rng = np.random.default_rng(0)
    start = rng.uniform(-0.5, 0.5, (n, 2))
    velocity = rng.normal(0, 0.02, (n, steps, 2))
    arrays = {"velocity": velocity, "position": start[:, None, :] + np.cumsum(velocity, axis=1), "start": start}
    arrays.update(replace)
    return arrays


def test_trajectories_archive(tmp_path):
    path = tmp_path / "walks.npz"
    np.savez(path, **_trajectories())
    result = validate("trajectories", path)
    assert result.ok and result.stats == {"trajectories": 4, "steps": 10}


@pytest.mark.parametrize(
    ("replace", "key", "reason"),
    [
        ({"start": np.full((4, 2), 2.0)}, "start", "leaves the box"),
        ({"velocity": np.full((4, 10, 2), np.nan)}, "velocity", "NaN"),
        ({"position": np.zeros((4, 10, 3))}, "position", "shape"),
        ({"position": np.zeros((4, 9, 2))}, "position", "shapes disagree"),
        ({"velocity": np.zeros((4, 10, 2), dtype=np.int64)}, "velocity", "floats"),
    ],
)
def test_broken_trajectories_name_the_array(tmp_path, replace, key, reason):
    path = tmp_path / "walks.npz"
    np.savez(path, **_trajectories(**replace))
    result = validate("trajectories", path)
    assert not result.ok and result.key == key and reason in result.reason


def test_velocity_in_metres_per_second_is_refused_with_the_conversion(tmp_path):
    path = tmp_path / "walks.npz"
    arrays = _trajectories()
    np.savez(path, **(arrays | {"velocity": arrays["velocity"] / 0.02}))  # the same walks, velocity in m/s
    result = validate("trajectories", path)
    assert not result.ok and result.key == "velocity"
    assert "metres per second" in result.reason and "multiply velocity by dt = 0.02" in result.reason
    np.savez(path, **(arrays | {"velocity": arrays["velocity"][:, ::-1]}))  # steps that do not add up
    assert "does not match the positions" in validate("trajectories", path).reason


def test_the_generator_writes_files_the_validator_accepts(tmp_path):
    from compress.problems.navigation import main

    main(["--out", str(tmp_path / "walks.npz"), "--count", "6", "--steps", "12", "--seed", "3"])
    result = validate("trajectories", tmp_path / "walks.npz")
    assert result.ok and result.stats == {"trajectories": 6, "steps": 12}
    with np.load(tmp_path / "walks.npz") as archive:
        speed = np.linalg.norm(archive["velocity"], axis=-1).mean() / 0.02  # m/s, if velocity is metres a step
    # Rayleigh speeds of scale 0.13 * 2 pi m/s have mean scale * sqrt(pi / 2) = 1.02 m/s (walls slow a few steps).
    assert 0.6 < speed < 1.1


def test_trajectories_never_unpickle(tmp_path):
    path = tmp_path / "evil.npz"
    arrays = _trajectories()
    arrays["velocity"] = np.array([object()] * 3, dtype=object)
    np.savez(path, **arrays)
    result = validate("trajectories", path)
    assert not result.ok and result.key == "velocity" and "pickle" in result.reason


def test_missing_array_and_not_an_archive(tmp_path):
    path = tmp_path / "walks.npz"
    arrays = _trajectories()
    del arrays["start"]
    np.savez(path, **arrays)
    assert validate("trajectories", path).key == "start"
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    assert "not a readable .npz" in validate("trajectories", junk).reason
    with pytest.raises(ValueError, match="purpose must be one of"):
        validate("images", junk)
