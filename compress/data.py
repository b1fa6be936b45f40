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
  ``python -m compress.problems.navigation`` writes), ``position`` (n, T, 2): the position after each step in metres,
  and
  ``start`` (n, 2) in metres; all finite, positions inside the box [-1.1, 1.1]^2 (the 2.2 m box centred on the
  origin), and the steps must add up: ``position[:, t] - position[:, t - 1] == velocity[:, t]`` (``start`` before the
  first step). A file whose velocity is in m/s (50 times the steps) is refused with that reason.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

MAX_LINE_BYTES = 1 << 20  # a "sentence" longer than 1 MiB is almost surely not text
BOX_HALF_WIDTH = 1.1
DT = 0.02  # seconds per navigation step
MAX_TAGS = 10_000


@dataclass(frozen=True)
class Validation:
    ok: bool
    line: int | None = None  # 1-based line of the first problem, for text formats
    key: str | None = None  # the offending array, for .npz archives
    reason: str | None = None
    stats: dict[str, int] = field(default_factory=dict)
    refused: bool = False  # unsafe to keep at all (an archive whose headers promise a zip bomb), not merely invalid

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
        if len(tags) > MAX_TAGS:  # the set is the one thing that grows with the file: bounded
            return Validation(False, line=number, reason=f"more than {MAX_TAGS:,} distinct tags: is the second "
                              "column a tag?")  # fmt: skip
    if tokens == 0:
        return Validation(False, reason="the file has no 'token<TAB>tag' lines")
    return Validation(True, stats={"sentences": sentences, "tokens": tokens, "tags": len(tags)})


# Archives are checked from their zip headers before a byte is decompressed, then read in chunks: validation holds
# about CHUNK_BYTES of an array at a time, whatever the archive declares.
MAX_ARCHIVE_MEMBERS = 16
MAX_UNCOMPRESSED_BYTES = 2 << 30
MAX_COMPRESSION_RATIO = 100  # float trajectories deflate by ~1.1x; a zip bomb by ~1000x
RATIO_FLOOR_BYTES = 1 << 20  # small members (an all-zero start array) may compress as well as they like
CHUNK_BYTES = 1 << 20
TRAJECTORY_ARRAYS = {"velocity": 3, "position": 3, "start": 2}


def _check_archive(archive: zipfile.ZipFile) -> Validation | None:
    """The zip's central directory alone: how many members, how large they say they are, how well they compress."""
    members = archive.infolist()
    if len(members) > MAX_ARCHIVE_MEMBERS:
        return Validation(False, reason=f"the archive has {len(members)} members; at most {MAX_ARCHIVE_MEMBERS}",
                          refused=True)  # fmt: skip
    total = sum(member.file_size for member in members)
    if total > MAX_UNCOMPRESSED_BYTES:
        return Validation(False, reason=f"the archive declares {total:,} uncompressed bytes; at most "
                          f"{MAX_UNCOMPRESSED_BYTES:,}", refused=True)  # fmt: skip
    for member in members:
        ratio = member.file_size / max(member.compress_size, 1)
        if member.file_size > RATIO_FLOOR_BYTES and ratio > MAX_COMPRESSION_RATIO:
            return Validation(
                False,
                key=member.filename.removesuffix(".npy"),
                reason=f"compressed {ratio:,.0f}:1 ({member.compress_size:,} bytes declare {member.file_size:,}); "
                f"at most {MAX_COMPRESSION_RATIO}:1 (is this a zip bomb?)",
                refused=True,
            )
    return None


def _array_header(archive: zipfile.ZipFile, key: str):
    """(the open member, positioned at its data, shape, dtype) of ``key``.npy, or a Validation saying why not."""
    import numpy as np

    member = archive.getinfo(f"{key}.npy")
    handle = archive.open(member)
    try:
        version = np.lib.format.read_magic(handle)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(handle, max_header_size=10_000)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, SyntaxError) as error:
        handle.close()
        return Validation(False, key=key, reason=f"not a readable .npy array ({error})"[:300])
    if dtype.hasobject:
        handle.close()
        return Validation(False, key=key, reason="cannot be read without pickle (it holds Python objects)")
    held = member.file_size - handle.tell()
    if held != math.prod(shape) * dtype.itemsize:
        handle.close()
        return Validation(False, key=key, reason=f"its header declares shape {shape} of {dtype}, which is not the "
                          f"{held:,} data bytes the archive holds")  # fmt: skip
    return handle, shape, dtype


def _chunks(handle, shape: tuple[int, ...], dtype) -> Iterator:
    """The array's values, flat, about CHUNK_BYTES at a time (order does not matter to elementwise checks)."""
    import numpy as np

    left = math.prod(shape)
    per_chunk = max(CHUNK_BYTES // dtype.itemsize, 1)
    while left:
        count = min(left, per_chunk)
        data = handle.read(count * dtype.itemsize)
        if len(data) != count * dtype.itemsize:
            raise EOFError("the array ends early")
        yield np.frombuffer(data, dtype=dtype)
        left -= count


def validate_trajectories(path: str | Path) -> Validation:
    import numpy as np

    try:
        with open(path, "rb") as handle:
            if handle.read(6) == b"\x93NUMPY":
                return Validation(False, reason="expected a .npz archive of named arrays, found a single array")
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as error:
        return Validation(False, reason=f"not a readable .npz archive ({error})")
    with archive:
        refused = _check_archive(archive)
        if refused is not None:
            return refused
        names = sorted(n.removesuffix(".npy") for n in archive.namelist())
        headers = {}
        for key, ndim in TRAJECTORY_ARRAYS.items():
            if key not in names:
                return Validation(False, key=key, reason=f"missing (the archive has {names})")
            opened = _array_header(archive, key)
            if isinstance(opened, Validation):
                return opened
            handle, shape, dtype = opened
            handle.close()
            if dtype.kind != "f":
                return Validation(False, key=key, reason=f"must hold floats, found {dtype}")
            if len(shape) != ndim or shape[-1] != 2:
                expected = "(n, T, 2)" if ndim == 3 else "(n, 2)"
                return Validation(False, key=key, reason=f"must have shape {expected}, found {shape}")
            headers[key] = shape
        velocity, position, start = headers["velocity"], headers["position"], headers["start"]
        if velocity != position or start[0] != velocity[0]:
            return Validation(
                False,
                key="position",
                reason=f"shapes disagree: velocity {velocity}, position {position}, start {start}",
            )
        for key in TRAJECTORY_ARRAYS:
            handle, shape, dtype = _array_header(archive, key)
            with handle:
                try:
                    for chunk in _chunks(handle, shape, dtype):
                        if not np.isfinite(chunk).all():
                            return Validation(False, key=key, reason="contains NaN or infinite values")
                        if key != "velocity" and np.abs(chunk).max(initial=0) > BOX_HALF_WIDTH + 1e-6:
                            return Validation(
                                False, key=key, reason=f"leaves the box [-{BOX_HALF_WIDTH}, {BOX_HALF_WIDTH}]^2 m"
                            )
                except (OSError, zipfile.BadZipFile, EOFError) as error:
                    return Validation(False, key=key, reason=f"cannot be read ({error})")
        count = max(1, min(int(velocity[0]), CHUNK_BYTES // (int(velocity[1]) * 2 * 8 * 16)))  # a few float64 copies
        problem = _velocity_problem(*(_leading(archive, key, count) for key in TRAJECTORY_ARRAYS))
        if problem:
            return Validation(False, key="velocity", reason=problem)
        return Validation(True, stats={"trajectories": int(velocity[0]), "steps": int(velocity[1])})


def _leading(archive: zipfile.ZipFile, key: str, count: int):
    """The first ``count`` trajectories of an array, for the unit check: bounded memory."""
    import numpy as np

    handle, shape, dtype = _array_header(archive, key)
    row = math.prod(shape[1:])
    with handle:
        data = handle.read(count * row * dtype.itemsize)
    return np.frombuffer(data, dtype=dtype).reshape(count, *shape[1:]).astype(np.float64)


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
