"""Vocabulary with ids ordered by training frequency (id 0 = most frequent).

Predefined-sparse embeddings give the longest vectors to the lowest ids, so the id order *is* the frequency order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

UNK = "<unk>"


@dataclass(frozen=True)
class Vocabulary:
    tokens: tuple[str, ...]
    counts: tuple[int, ...]
    unk: str = UNK
    index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", {t: i for i, t in enumerate(self.tokens)})

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: str) -> bool:
        return token in self.index

    def id(self, token: str) -> int:
        found = self.index.get(token)
        if found is None:
            if self.unk not in self.index:
                raise KeyError(f"token {token!r} is not in the vocabulary and it has no {self.unk!r} entry")
            return self.index[self.unk]
        return found

    def encode(self, tokens: Iterable[str]) -> list[int]:
        return [self.id(t) for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.tokens[i] for i in ids]


def build_vocabulary(
    tokens_or_counts: Iterable[str] | Mapping[str, int],
    *,
    max_size: int | None = None,
    specials: Sequence[str] = (UNK,),
) -> Vocabulary:
    """Vocabulary sorted by descending count (ties alphabetically, so the order is reproducible).

    ``specials`` are always kept (within ``max_size``). The unknown token is ``<unk>`` when it is among them, else
    the first special. With ``max_size``, the rarest words are dropped and their occurrences counted as the unknown
    token; with no specials at all, dropped words are simply left out (encoding one then raises ``KeyError``).
    A special token is ranked by the occurrences it stands for, like any other word.
    """
    counts = Counter(tokens_or_counts)  # counts a token stream, or copies a mapping of counts
    unk = UNK if UNK in specials else (specials[0] if specials else None)
    for special in specials:
        counts.setdefault(special, 0)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    if max_size is not None:
        if max_size < len(specials):
            raise ValueError(f"max_size ({max_size}) must leave room for the special tokens {list(specials)}")
        kept = [item for item in ranked if item[0] in specials]
        others = [item for item in ranked if item[0] not in specials]
        room = max_size - len(kept)
        dropped = sum(count for _, count in others[room:])
        kept = dict(kept + others[:room])
        if dropped and unk is not None:
            kept[unk] = kept.get(unk, 0) + dropped
        ranked = sorted(kept.items(), key=lambda item: (-item[1], item[0]))
    return Vocabulary(tuple(t for t, _ in ranked), tuple(c for _, c in ranked), unk=unk or UNK)
