"""Generated corpora for tests, demos and benchmarks when no real one can be shipped.

No POS-tagged corpus is available, so :func:`tagging_corpus` samples one from a small hidden Markov model whose
vocabulary is Zipfian (like real text, so frequency-blocked embeddings have something to exploit): every word has a
home tag that emits it most of the time, with a little ambiguity, as parts of speech do.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def tagging_corpus(
    sentences: int,
    *,
    vocab_size: int = 2000,
    tags: int = 12,
    mean_length: int = 15,
    ambiguity: float = 0.1,
    zipf_exponent: float = 1.1,
    seed: int = 0,
) -> list[tuple[list[str], list[str]]]:
    """``sentences`` (tokens, tags) pairs sampled from a seeded HMM; words are ``w<rank>`` (w0 the most frequent)."""
    rng = np.random.default_rng(seed)
    home = rng.integers(0, tags, size=vocab_size)
    home[:tags] = np.arange(tags)  # every tag owns at least one frequent word
    zipf = 1.0 / np.arange(1, vocab_size + 1) ** zipf_exponent
    emission = np.full((tags, vocab_size), ambiguity / vocab_size)
    emission[home, np.arange(vocab_size)] += 1.0
    emission *= zipf
    emission /= emission.sum(1, keepdims=True)
    transition = rng.dirichlet(np.full(tags, 0.3), size=tags)
    initial = rng.dirichlet(np.ones(tags))
    corpus = []
    for _ in range(sentences):
        length = max(2, int(rng.poisson(mean_length)))
        state = rng.choice(tags, p=initial)
        words, labels = [], []
        for _ in range(length):
            words.append(f"w{rng.choice(vocab_size, p=emission[state])}")
            labels.append(f"T{state}")
            state = rng.choice(tags, p=transition[state])
        corpus.append((words, labels))
    return corpus


def write_conll(path: str | Path, corpus: list[tuple[list[str], list[str]]]) -> Path:
    path = Path(path)
    with open(path, "w", encoding="utf-8") as handle:
        for words, labels in corpus:
            handle.writelines(f"{w}\t{t}\n" for w, t in zip(words, labels, strict=True))
            handle.write("\n")
    return path
