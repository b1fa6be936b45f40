"""Vocabulary: ids in descending-frequency order, ties alphabetical, rare words folded into <unk>.

Expectations come from a Counter and sorted() built here, hand-worked examples, and the published PTB numbers
(10k vocabulary, 929,589 training tokens counting one <eos> per sentence; see docs/MACHINE-NOTES.md).
"""

from __future__ import annotations

import warnings
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compress.vocab import UNK, Vocabulary, build_vocabulary

WORDS = st.sampled_from(["a", "b", "c", "d", "e", "f", "g", "the", "of", "zebra", "Apple", "<unk>"])
TOKEN_LISTS = st.lists(WORDS, min_size=0, max_size=60)


def expected_ranking(counter: Counter) -> list[tuple[str, int]]:
    """Descending count, alphabetical among equal counts: the order written in the docstring."""
    return sorted(counter.items(), key=lambda item: (-item[1], item[0]))


def ptb_train_tokens() -> list[str]:
    """The PTB LM training text as tokens, one <eos> after each sentence (the Mikolov convention)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)
        import treebank
    text = treebank.penn["train"]
    return [token for line in text.splitlines() if line.strip() for token in (*line.split(), "<eos>")]


# --- hand-worked examples --------------------------------------------------------------------------------------------


def test_ids_follow_descending_count_with_alphabetical_ties():
    tokens = ["b", "a", "c", "a", "b", "a", "d", "c"]  # a:3, b:2, c:2, d:1, and <unk> (a special) with 0 occurrences
    vocab = build_vocabulary(tokens)
    assert vocab.tokens == ("a", "b", "c", "d", "<unk>")
    assert vocab.counts == (3, 2, 2, 1, 0)
    assert [vocab.id(t) for t in ("a", "b", "c", "d", "<unk>")] == [0, 1, 2, 3, 4]


def test_a_mapping_of_counts_is_taken_as_counts():
    vocab = build_vocabulary({"x": 2, "y": 7, "w": 2})
    assert vocab.tokens == ("y", "w", "x", "<unk>")
    assert vocab.counts == (7, 2, 2, 0)


def test_max_size_drops_the_rarest_and_adds_their_occurrences_to_unk():
    # a:5 b:4 c:3 d:1 e:1; room for <unk> + 2 words keeps a, b and folds c, d, e (3 + 1 + 1 = 5) into <unk>.
    tokens = ["a"] * 5 + ["b"] * 4 + ["c"] * 3 + ["d", "e"]
    vocab = build_vocabulary(tokens, max_size=3)
    # <unk> (5) ties with a (5); '<' sorts before 'a', so <unk> comes first.
    assert vocab.tokens == ("<unk>", "a", "b")
    assert vocab.counts == (5, 5, 4)
    assert sum(vocab.counts) == len(tokens)
    assert vocab.encode(["c", "d", "e", "a"]) == [0, 0, 0, 1]


def test_max_size_cut_between_equal_counts_keeps_the_alphabetically_first():
    vocab = build_vocabulary(["q", "p", "r", "p"], max_size=3)  # p:2, q:1, r:1 -> keep p and q, fold r
    assert vocab.tokens == ("p", "<unk>", "q")
    assert vocab.counts == (2, 1, 1)


def test_max_size_adds_to_an_unk_that_already_occurs_in_the_text():
    tokens = ["<unk>"] * 2 + ["a"] * 3 + ["b"]
    vocab = build_vocabulary(tokens, max_size=2)
    assert vocab.tokens == ("<unk>", "a")
    assert vocab.counts == (3, 3)


def test_max_size_larger_than_the_vocabulary_drops_nothing():
    tokens = ["x", "y", "x"]
    assert build_vocabulary(tokens, max_size=100) == build_vocabulary(tokens)


def test_max_size_must_leave_room_for_the_specials():
    with pytest.raises(ValueError, match="max_size"):
        build_vocabulary(["a", "b"], max_size=1, specials=("<unk>", "<pad>"))
    with pytest.raises(ValueError, match="max_size"):
        build_vocabulary(["a", "b"], max_size=0)


def test_max_size_is_a_cap_even_without_specials():
    vocab = build_vocabulary(["a", "a", "b", "c"], max_size=2, specials=())
    assert vocab.tokens == ("a", "b")  # c is dropped (ties broken alphabetically) and no <unk> is invented
    with pytest.raises(KeyError, match="'c'"):
        vocab.id("c")


def test_unk_is_found_among_the_specials_wherever_it_is_listed():
    vocab = build_vocabulary(["a", "a", "b", "c"], max_size=3, specials=("<pad>", "<unk>"))
    assert vocab.unk == "<unk>"
    assert vocab.counts[vocab.id("<unk>")] == 2 and vocab.counts[vocab.id("<pad>")] == 0
    assert vocab.id("zebra") == vocab.id("<unk>")


def test_extra_specials_are_always_kept_and_ranked_by_their_count():
    vocab = build_vocabulary(["a", "a", "b", "c"], max_size=3, specials=("<unk>", "<pad>"))
    # <pad> never occurs (0); b and c are cut (1 + 1 -> <unk> = 2); a keeps 2 -> tie, '<unk>' < 'a'.
    assert vocab.tokens == ("<unk>", "a", "<pad>")
    assert vocab.counts == (2, 2, 0)


def test_unknown_tokens_map_to_unk():
    vocab = build_vocabulary(["the", "cat", "sat"])
    unk_id = vocab.id(UNK)
    assert vocab.id("dog") == unk_id
    assert vocab.encode(["the", "dog", "sat"]) == [vocab.id("the"), unk_id, vocab.id("sat")]
    assert "dog" not in vocab
    assert "cat" in vocab


def test_without_an_unk_entry_an_unknown_token_is_a_key_error():
    vocab = build_vocabulary(["the", "cat"], specials=())
    assert UNK not in vocab
    with pytest.raises(KeyError, match="dog"):
        vocab.id("dog")


def test_empty_input_gives_just_the_specials():
    vocab = build_vocabulary([])
    assert vocab.tokens == (UNK,)
    assert vocab.counts == (0,)


def test_vocabulary_can_be_built_directly():
    vocab = Vocabulary(("x", "<unk>"), (4, 1))
    assert len(vocab) == 2
    assert vocab.encode(["x", "y"]) == [0, 1]


# --- properties -----------------------------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(TOKEN_LISTS)
def test_order_and_counts_match_an_independent_counter(tokens):
    vocab = build_vocabulary(tokens)
    counter = Counter(tokens)
    counter[UNK] += 0  # the special is always present, with the occurrences it has in the text
    ranking = expected_ranking(counter)
    assert vocab.tokens == tuple(t for t, _ in ranking)
    assert vocab.counts == tuple(c for _, c in ranking)
    assert len(vocab) == len(set(tokens) | {UNK})
    assert all(vocab.id(t) == i for i, t in enumerate(vocab.tokens))


@settings(max_examples=100, deadline=None)
@given(TOKEN_LISTS, st.integers(min_value=1, max_value=14))
def test_max_size_keeps_the_most_frequent_and_conserves_occurrences(tokens, max_size):
    vocab = build_vocabulary(tokens, max_size=max_size)
    counter = Counter(tokens)
    others = expected_ranking(Counter({t: c for t, c in counter.items() if t != UNK}))
    kept, dropped = others[: max_size - 1], others[max_size - 1 :]
    expected = Counter(dict(kept))
    expected[UNK] = counter[UNK] + sum(c for _, c in dropped)
    ranking = expected_ranking(expected)
    assert vocab.tokens == tuple(t for t, _ in ranking)
    assert vocab.counts == tuple(c for _, c in ranking)
    assert len(vocab) == min(max_size, len(set(tokens) | {UNK}))
    assert sum(vocab.counts) == len(tokens)


@settings(max_examples=100, deadline=None)
@given(TOKEN_LISTS, TOKEN_LISTS, st.integers(min_value=1, max_value=14))
def test_encode_decode_round_trip(train, text, max_size):
    vocab = build_vocabulary(train, max_size=max_size)
    ids = vocab.encode(text)
    assert all(0 <= i < len(vocab) for i in ids)
    assert vocab.decode(ids) == [t if t in vocab else UNK for t in text]
    assert vocab.encode(vocab.decode(ids)) == ids


# --- the real corpus ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ptb_tokens() -> list[str]:
    return ptb_train_tokens()


def test_ptb_vocabulary(ptb_tokens):
    assert len(ptb_tokens) == 929_589  # the published PTB training size, one <eos> per sentence
    vocab = build_vocabulary(ptb_tokens)
    assert len(vocab) == 10_000
    assert UNK in vocab
    assert "<eos>" in vocab
    assert vocab.id("the") == 0
    assert sum(vocab.counts) == len(ptb_tokens)
    ranking = expected_ranking(Counter(ptb_tokens))
    assert vocab.tokens == tuple(t for t, _ in ranking)
    assert vocab.counts == tuple(c for _, c in ranking)
    # The PTB text already maps rare words to <unk>, which is then a frequent word in its own right.
    assert vocab.counts[vocab.id(UNK)] == ptb_tokens.count(UNK)


def test_ptb_vocabulary_capped(ptb_tokens):
    vocab = build_vocabulary(ptb_tokens, max_size=1000)
    counter = Counter(ptb_tokens)
    others = expected_ranking(Counter({t: c for t, c in counter.items() if t != UNK}))
    assert len(vocab) == 1000
    assert set(vocab.tokens) == {t for t, _ in others[:999]} | {UNK}
    assert vocab.counts[vocab.id(UNK)] == counter[UNK] + sum(c for _, c in others[999:])
    assert sum(vocab.counts) == len(ptb_tokens)
    # 9,001 folded word types make <unk> the most frequent token, ahead of 'the'.
    assert vocab.tokens[:2] == (UNK, "the")
