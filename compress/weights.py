"""A user's own weights: the contract a recipe sets, what an uploaded file holds, and the vocabulary its rows follow.

- :func:`weight_contract`: the parameter names and shapes the recipe's model has (built on the ``meta`` device, so
  nothing is allocated). An ``init_from`` file must hold exactly these names with these shapes.
- :func:`describe_weights`: names and shapes of a safetensors file (a sparseq checkpoint or a plain file) read from
  its header, nothing loaded; and the vocabulary (and tag set) stored in it, if any: a sparseq checkpoint's manifest
  keeps them, a plain file can carry them as JSON lists under the metadata keys ``vocabulary`` and ``tags``.
- :func:`compare_weights`: what does not fit, as the first missing, unexpected and mis-shaped names.
- ``vocabulary`` files: UTF-8, one token a line, in id order (line 1 is id 0): the rows of the user's embedding and
  decoder. Unknown words of the data map to ``<unk>`` when the vocabulary has it (a language model also needs
  ``<eos>``, the end-of-sentence token); the output checkpoint's vocabulary is this one, unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compress.data import Validation, _lines

SHOWN = 5  # names listed per kind of mismatch


@dataclass(frozen=True)
class WeightsInfo:
    tensors: dict[str, list[int]]
    vocabulary: list[str] | None = None
    tags: list[str] | None = None
    sparseq: bool = False  # a sparseq checkpoint (manifest inside), else a plain safetensors file


@dataclass(frozen=True)
class Mismatch:
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mis_shaped: list[tuple[str, list[int], list[int]]] = field(default_factory=list)  # name, found, expected

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.mis_shaped)

    def describe(self) -> str:
        parts = []
        if self.missing:
            parts.append(f"missing {self._names(self.missing)}")
        if self.unexpected:
            parts.append(f"unexpected {self._names(self.unexpected)}")
        if self.mis_shaped:
            shown = ", ".join(f"{n} is {tuple(f)}, the recipe needs {tuple(e)}" for n, f, e in self.mis_shaped[:SHOWN])
            more = f" and {len(self.mis_shaped) - SHOWN} more" if len(self.mis_shaped) > SHOWN else ""
            parts.append(f"mis-shaped: {shown}{more}")
        return "; ".join(parts)

    @staticmethod
    def _names(names: list[str]) -> str:
        more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
        return ", ".join(names[:SHOWN]) + more


def weight_contract(recipe, sizes: Mapping[str, int]) -> dict[str, list[int]]:
    """Name -> shape of every tensor the recipe's model holds (``sizes``: vocab_size, num_tags for text tasks)."""
    import torch

    from compress.pipeline import build_model

    with torch.device("meta"):
        model = build_model(recipe, sizes)
    return {name: list(tensor.shape) for name, tensor in model.state_dict().items()}


def _json_list(text: str | None, key: str) -> list[str] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        raise ValueError(f"the metadata key {key!r} must be a JSON list of strings") from None
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise ValueError(f"the metadata key {key!r} must be a JSON list of strings")
    return value


def describe_weights(path: str | Path) -> WeightsInfo:
    """What a safetensors file holds, from its header alone in bounded memory (compress.checkpoint's checked readers:
    every entry's byte range against the file, a manifest's records against the entries they name). Raises
    ValueError (CheckpointError) for anything else."""
    from compress.checkpoint import NotACheckpoint, check_manifest, read_header

    try:
        manifest, records = check_manifest(path)
    except NotACheckpoint:
        stored, metadata = read_header(path)
        tensors = {name: list(entry.shape) for name, entry in stored.items()}
        vocabulary = _json_list(metadata.get("vocabulary"), "vocabulary")
        return WeightsInfo(tensors, vocabulary, _json_list(metadata.get("tags"), "tags"))
    tensors = {name: list(record.shape) for name, record in records.items()}
    return WeightsInfo(tensors, manifest.get("vocabulary"), manifest.get("tags"), sparseq=True)


def compare_weights(contract: Mapping[str, list[int]], found: Mapping[str, list[int]]) -> Mismatch:
    return Mismatch(
        missing=sorted(set(contract) - set(found)),
        unexpected=sorted(set(found) - set(contract)),
        mis_shaped=[(n, list(found[n]), list(contract[n])) for n in contract if n in found and found[n] != contract[n]],
    )


def validate_vocabulary(path: str | Path) -> Validation:
    """One token a line, no blanks, no whitespace inside a token, no duplicates."""
    seen: set[str] = set()
    for number, text, problem in _lines(path):
        if problem:
            return Validation(False, line=number, reason=problem)
        token = text.strip()
        if not token:
            return Validation(False, line=number, reason="empty line: one token a line, line n is id n - 1")
        if len(token.split()) != 1:
            return Validation(False, line=number, reason=f"{token[:40]!r} has whitespace inside: one token a line")
        if token in seen:
            return Validation(False, line=number, reason=f"{token[:40]!r} appears twice")
        seen.add(token)
    if not seen:
        return Validation(False, reason="the file has no tokens")
    return Validation(True, stats={"tokens": len(seen)})


def read_vocabulary(path: str | Path) -> list[str]:
    from compress.data import DataError

    checked = validate_vocabulary(path)
    if not checked.ok:
        raise DataError(checked, path)
    return [text.strip() for _, text, _ in _lines(path)]


def vocabulary_of(data: Mapping[str, Any]) -> tuple[list[str] | None, list[str] | None]:
    """The vocabulary (and tags) a job's rows follow: a ``vocabulary`` file, else what the ``init_from`` weights
    carry, else None (the vocabulary is then built from the training data, most frequent word first)."""
    tokens = tags = None
    if data.get("init_from") is not None:
        info = describe_weights(data["init_from"])
        tokens, tags = info.vocabulary, info.tags
    if data.get("vocabulary") is not None:
        tokens = read_vocabulary(data["vocabulary"])
    return tokens, tags


__all__ = [
    "Mismatch",
    "WeightsInfo",
    "compare_weights",
    "describe_weights",
    "read_vocabulary",
    "validate_vocabulary",
    "vocabulary_of",
    "weight_contract",
]
