"""Dataset formats and their validators.

Each validator streams the file once and returns a :class:`Validation`: ``ok``, or the first offending line (1-based)
or key with the reason, plus counts that help a user see what was read. The service runs them on upload, before any
job can use the file; the readers run them too, so a bad file never reaches training as a stack trace.

Formats:

- ``lm_text``: UTF-8 plain text, whitespace-separated tokens, one sentence a line (the Penn Treebank LM format).
  Blank lines are skipped.
- ``tagging_conll``: UTF-8, one ``token<TAB>tag`` pair a line, a blank line between sentences (CoNLL style).
- ``trajectories``: a NumPy ``.npz`` archive (read with ``allow_pickle=False``) with float arrays
  ``velocity`` (n, T, 2): the displacement of each step in metres (speed x dt, dt = 0.02 s - what
  ``python -m compress.tasks.navigation`` writes), ``position`` (n, T, 2): the position after each step in metres, and
  ``start`` (n, 2) in metres; all finite, positions inside the box [-1.1, 1.1]^2 (the 2.2 m box centred on the
  origin), and the steps must add up: ``position[:, t] - position[:, t - 1] == velocity[:, t]`` (``start`` before the
  first step). A file whose velocity is in m/s (50 times the steps) is refused with that reason.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

MAX_LINE_BYTES = 1 << 20  # a "sentence" longer than 1 MiB is almost surely not text
BOX_HALF_WIDTH = 1.1
DT = 0.02  # seconds per navigation step


@dataclass(frozen=True)
class Validation:
    ok: bool
    line: int | None = None  # 1-based line of the first problem, for text formats
    key: str | None = None  # the offending array, for .npz archives
    reason: str | None = None
    stats: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        if self.ok:
            return "ok: " + ", ".join(f"{v} {k}" for k, v in self.stats.items())
        where = f"line {self.line}: " if self.line is not None else (f"array {self.key!r}: " if self.key else "")
        return where + (self.reason or "invalid")


class DataError(ValueError):
    """A dataset that cannot be read; its message names the line or array at fault."""

    def __init__(self, validation: Validation, path: str | Path) -> None:
        super().__init__(f"{Path(path).name}: {validation.describe()}")
        self.validation = validation


def _lines(path: str | Path) -> Iterator[tuple[int, str | None, str | None]]:
    """(line number, decoded text without the newline, problem) for every line, streamed."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if len(raw) > MAX_LINE_BYTES:
                yield number, None, f"line is longer than {MAX_LINE_BYTES} bytes: is this a text file?"
                return
            if b"\x00" in raw:
                yield number, None, "contains a NUL byte: this looks like a binary file, not text"
                return
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                yield number, None, f"not valid UTF-8 (byte {error.start + 1} of the line)"
                return
            yield number, text.rstrip("\r\n"), None


def validate_lm_text(path: str | Path) -> Validation:
    sentences = tokens = 0
    for number, text, problem in _lines(path):
        if problem:
            return Validation(False, line=number, reason=problem)
        words = text.split()
        if words:
            sentences += 1
            tokens += len(words)
    if tokens == 0:
        return Validation(False, reason="the file has no tokens")
    return Validation(True, stats={"sentences": sentences, "tokens": tokens})


def validate_tagging_conll(path: str | Path) -> Validation:
    sentences = tokens = 0
    tags: set[str] = set()
    in_sentence = False
    for number, text, problem in _lines(path):
        if problem:
            return Validation(False, line=number, reason=problem)
        if not text.strip():
            in_sentence = False
            continue
        fields = text.split("\t")
        if len(fields) != 2:
            return Validation(
                False, line=number, reason=f"expected 'token<TAB>tag', found {len(fields)} tab-separated field(s)"
            )
        token, tag = fields[0].strip(), fields[1].strip()
        if not token or not tag:
            return Validation(False, line=number, reason="empty token or tag")
        if not in_sentence:
            sentences += 1
            in_sentence = True
        tokens += 1
        tags.add(tag)
    if tokens == 0:
        return Validation(False, reason="the file has no 'token<TAB>tag' lines")
    return Validation(True, stats={"sentences": sentences, "tokens": tokens, "tags": len(tags)})


def validate_trajectories(path: str | Path) -> Validation:
    import numpy as np

    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as error:
        return Validation(False, reason=f"not a readable .npz archive ({error})")
    with archive:
        if not isinstance(archive, np.lib.npyio.NpzFile):
            return Validation(False, reason="expected a .npz archive of named arrays, found a single array")
        arrays = {}
        for key in ("velocity", "position", "start"):
            if key not in archive.files:
                return Validation(False, key=key, reason=f"missing (the archive has {sorted(archive.files)})")
            try:
                arrays[key] = archive[key]
            except ValueError as error:  # object arrays would need pickle: refused
                return Validation(False, key=key, reason=f"cannot be read without pickle ({error})")
        velocity, position, start = arrays["velocity"], arrays["position"], arrays["start"]
        for key, array, ndim in (("velocity", velocity, 3), ("position", position, 3), ("start", start, 2)):
            if array.dtype.kind != "f":
                return Validation(False, key=key, reason=f"must hold floats, found {array.dtype}")
            if array.ndim != ndim or array.shape[-1] != 2:
                expected = "(n, T, 2)" if ndim == 3 else "(n, 2)"
                return Validation(False, key=key, reason=f"must have shape {expected}, found {array.shape}")
            if not np.isfinite(array).all():
                return Validation(False, key=key, reason="contains NaN or infinite values")
        if velocity.shape != position.shape or start.shape[0] != velocity.shape[0]:
            return Validation(
                False,
                key="position",
                reason=f"shapes disagree: velocity {velocity.shape}, position {position.shape}, start {start.shape}",
            )
        for key, array in (("position", position), ("start", start)):
            if np.abs(array).max(initial=0) > BOX_HALF_WIDTH + 1e-6:
                return Validation(False, key=key, reason=f"leaves the box [-{BOX_HALF_WIDTH}, {BOX_HALF_WIDTH}]^2 m")
        problem = _velocity_problem(velocity, position, start)
        if problem:
            return Validation(False, key="velocity", reason=problem)
        return Validation(True, stats={"trajectories": int(velocity.shape[0]), "steps": int(velocity.shape[1])})


def _velocity_problem(velocity, position, start) -> str | None:
    """None when the velocities are the steps between the positions (the model integrates them: velocity *is* the
    displacement per step); else why not, with the conversion when the unit is m/s."""
    import numpy as np

    steps = np.diff(np.concatenate([start[:, None, :], position], axis=1), axis=1)
    scale = float(np.median(np.abs(steps))) + 1e-12

    def mismatch(candidate) -> float:  # the walls clamp a few steps: the median tells the unit
        return float(np.median(np.abs(steps - candidate))) / scale

    if mismatch(velocity) <= 0.05:
        return None
    if mismatch(velocity * DT) <= 0.05:
        return (
            f"looks like metres per second (about {1 / DT:g} times the steps between the positions): the file holds "
            f"the displacement of each step in metres; multiply velocity by dt = {DT} s"
        )
    return (
        "does not match the positions: velocity[:, t] must be position[:, t] - position[:, t - 1] (start before the "
        "first step), in metres"
    )


VALIDATORS = {
    "lm_text": validate_lm_text,
    "tagging_conll": validate_tagging_conll,
    "trajectories": validate_trajectories,
}


def validate(purpose: str, path: str | Path) -> Validation:
    try:
        validator = VALIDATORS[purpose]
    except KeyError:
        raise ValueError(f"purpose must be one of {sorted(VALIDATORS)}, got {purpose!r}") from None
    return validator(path)


def read_lm_text(path: str | Path) -> list[list[str]]:
    """Sentences as token lists; raises :class:`DataError` naming the first bad line."""
    checked = validate_lm_text(path)
    if not checked.ok:
        raise DataError(checked, path)
    return [text.split() for _, text, _ in _lines(path) if text.split()]


def read_tagging_conll(path: str | Path) -> list[tuple[list[str], list[str]]]:
    """Sentences as (tokens, tags); raises :class:`DataError` naming the first bad line."""
    checked = validate_tagging_conll(path)
    if not checked.ok:
        raise DataError(checked, path)
    sentences: list[tuple[list[str], list[str]]] = []
    tokens: list[str] = []
    tags: list[str] = []
    for _, text, _ in _lines(path):
        if not text.strip():
            if tokens:
                sentences.append((tokens, tags))
                tokens, tags = [], []
            continue
        token, tag = (part.strip() for part in text.split("\t"))
        tokens.append(token)
        tags.append(tag)
    if tokens:
        sentences.append((tokens, tags))
    return sentences
