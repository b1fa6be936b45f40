"""The sparse checkpoint format: safetensors only, no pickle anywhere.

A checkpoint is one ``.safetensors`` file. Every logical tensor is stored in one of three encodings, chosen per tensor
as the smallest (measured by benchmarks/checkpoint_size.py):

- ``dense``: the tensor as is (dense layers, and predefined-sparse models, whose weights *are* small dense blocks);
- ``bitmask``: the kept values, plus one bit per entry (``<name>::values``, ``<name>::bitmask``); best near 50%;
- ``gaps``: the kept values, plus one byte per kept entry giving the number of zeros before it, the byte 255 meaning
  "255 zeros and no entry" (``<name>::values``, ``<name>::gaps``); best from ~80% sparsity, within a few percent of
  the information bound (values + log2 C(n, nnz) bits) at 90-99%.

The safetensors metadata holds one JSON manifest under the key ``sparseq``: format version, library version, the
caller's fields (recipe, method, metrics...) and, per tensor, its encoding, shape, dtype, nnz, sparsity and the
sha256 of every stored entry. Loading verifies each checksum and names the tensor whose bytes changed.

Values can be stored in a smaller floating-point type (``value_dtype="float16"`` or ``"bfloat16"``): the record keeps
the tensor's own dtype and adds ``stored_dtype``; loading casts back. A value that rounds to zero in the smaller type
becomes a pruned entry (the non-zero count is that of the stored values); one beyond its range is refused. Those
files also deflate each stored entry (zlib, values split into byte planes first, as blosc's shuffle does: the high
bytes of nearby weights repeat) where that makes it smaller: ``deflated`` maps the entry to its element count, and
loading inflates no more than that. At 98% sparsity this takes the index and values from ~3 to ~2.1 bytes per kept
weight (benchmarks/checkpoint_size.py).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

FORMAT = "sparseq-checkpoint"
FORMAT_VERSION = 1
MANIFEST_KEY = "sparseq"
ENCODINGS = ("dense", "bitmask", "gaps")
VALUE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_ESCAPE = 255


class CheckpointError(ValueError):
    """A checkpoint that cannot be trusted or read; the message says which tensor or field and why."""


class NotACheckpoint(CheckpointError):
    """A readable safetensors file without a sparseq manifest (plain weights)."""


# -- encodings --------------------------------------------------------------------------------------------------------


def encode_gaps(kept: np.ndarray) -> np.ndarray:
    """Byte stream for a flat boolean mask: for each kept entry, the zeros before it (255 = 255 zeros, no entry)."""
    positions = np.flatnonzero(kept)
    gaps = np.diff(positions, prepend=-1) - 1
    escapes = gaps // _ESCAPE
    remainders = gaps - escapes * _ESCAPE
    out = np.full(positions.size + int(escapes.sum()), _ESCAPE, dtype=np.uint8)
    # The remainder byte of entry i lands after all escape bytes of entries 0..i.
    out[np.cumsum(escapes + 1) - 1] = remainders
    return out


def decode_gaps(stream: np.ndarray, numel: int) -> np.ndarray:
    stream = stream.astype(np.int64)
    advance = np.where(stream < _ESCAPE, stream + 1, _ESCAPE)
    ends = np.cumsum(advance)
    positions = ends[stream < _ESCAPE] - 1
    if positions.size and (positions[-1] >= numel or positions[0] < 0):
        raise CheckpointError("gap stream points past the end of the tensor")
    kept = np.zeros(numel, dtype=bool)
    kept[positions] = True
    return kept


def _encoded_sizes(numel: int, nnz: int, element_bytes: int, gap_bytes: int) -> dict[str, int]:
    return {
        "dense": numel * element_bytes,
        "bitmask": nnz * element_bytes + math.ceil(numel / 8),
        "gaps": nnz * element_bytes + gap_bytes,
    }


def information_bound_bytes(numel: int, nnz: int, element_bytes: int = 4) -> float:
    """values + log2 C(n, nnz) bits: no encoding of positions can be smaller on average."""
    log2_choose = (math.lgamma(numel + 1) - math.lgamma(nnz + 1) - math.lgamma(numel - nnz + 1)) / math.log(2)
    return nnz * element_bytes + log2_choose / 8


@dataclass(frozen=True)
class TensorRecord:
    name: str
    encoding: str
    shape: tuple[int, ...]
    dtype: str
    nnz: int
    stored: dict[str, str]  # stored entry name -> sha256
    stored_dtype: str | None = None  # the values' type in the file, where it differs from ``dtype``
    deflated: dict[str, int] = field(default_factory=dict)  # stored entry -> element count, for deflated entries

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def sparsity(self) -> float:
        return 1 - self.nnz / self.numel if self.numel else 0.0

    def to_json(self) -> dict[str, Any]:
        return (
            {
                "encoding": self.encoding,
                "shape": list(self.shape),
                "dtype": self.dtype,
                "nnz": self.nnz,
                "sparsity": round(self.sparsity, 6),
                "sha256": self.stored,
            }
            | ({"stored_dtype": self.stored_dtype} if self.stored_dtype else {})
            | ({"deflated": self.deflated} if self.deflated else {})
        )


def _sha256(tensor: Tensor) -> str:
    return hashlib.sha256(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _encode(
    name: str, tensor: Tensor, encoding: str | None, value_dtype: torch.dtype | None = None
) -> tuple[TensorRecord, dict[str, Tensor]]:
    if "::" in name:
        raise CheckpointError(f"tensor name {name!r} may not contain '::' (reserved for stored parts)")
    tensor = tensor.detach().to("cpu").contiguous()
    logical_dtype, stored_dtype = tensor.dtype, None
    if value_dtype is not None and tensor.is_floating_point() and tensor.dtype != value_dtype:
        smaller = tensor.to(value_dtype)
        if not torch.isfinite(smaller).all() and torch.isfinite(tensor).all():
            raise CheckpointError(
                f"tensor {name!r} has values beyond {_dtype_name(value_dtype)}'s range: store it as float32 or bfloat16"
            )
        tensor, stored_dtype = smaller, _dtype_name(value_dtype)
    flat = tensor.reshape(-1)
    kept = (flat != 0).numpy()
    nnz = int(kept.sum())
    gaps = encode_gaps(kept) if encoding in (None, "gaps") and flat.is_floating_point() else None
    if encoding is None:
        sizes = _encoded_sizes(flat.numel(), nnz, flat.element_size(), gaps.size if gaps is not None else 1 << 62)
        if not flat.is_floating_point():
            sizes = {"dense": sizes["dense"]}
        encoding = min(sizes, key=sizes.get)
    if encoding not in ENCODINGS:
        raise CheckpointError(f"unknown encoding {encoding!r} for {name!r}; choose one of {ENCODINGS}")
    if encoding == "dense":
        parts = {name: tensor}
    else:
        values = flat[torch.from_numpy(kept)]
        if encoding == "bitmask":
            index = torch.from_numpy(np.packbits(kept))
        else:
            index = torch.from_numpy(gaps if gaps is not None else encode_gaps(kept))
        parts = {f"{name}::values": values, f"{name}::{encoding}": index}
    deflated = {}
    if stored_dtype is not None:
        for part, stored in list(parts.items()):
            packed = _deflate(stored)
            if packed is not None:
                parts[part], deflated[part] = packed, stored.numel()
    digests = {k: _sha256(v) for k, v in parts.items()}
    record = TensorRecord(
        name, encoding, tuple(tensor.shape), _dtype_name(logical_dtype), nnz, digests, stored_dtype, deflated
    )
    return record, parts


def _deflate(part: Tensor) -> Tensor | None:
    """zlib of the entry's bytes, byte planes first (all first bytes, then all second bytes...); None if not smaller."""
    size = part.element_size()
    raw = part.contiguous().reshape(-1).view(torch.uint8).numpy()
    planes = np.ascontiguousarray(raw.reshape(-1, size).T) if size > 1 else raw
    packed = zlib.compress(planes.tobytes(), 6)
    if len(packed) >= 0.98 * raw.size:
        return None
    return torch.frombuffer(bytearray(packed), dtype=torch.uint8)


def _inflate(record: TensorRecord, part: str, packed: Tensor, dtype: torch.dtype) -> Tensor:
    count = record.deflated[part]
    size = torch.empty(0, dtype=dtype).element_size()
    expected = count * size
    inflater = zlib.decompressobj()
    try:  # never more than the manifest's count: a crafted stream cannot inflate without bound
        data = inflater.decompress(packed.numpy().tobytes(), expected)
    except zlib.error as error:
        raise CheckpointError(f"tensor {record.name!r}: {part!r} does not inflate ({error})") from None
    if len(data) != expected or inflater.unconsumed_tail or not inflater.eof:
        raise CheckpointError(f"tensor {record.name!r}: {part!r} does not inflate to {count} elements")
    planes = np.frombuffer(data, dtype=np.uint8)
    raw = np.ascontiguousarray(planes.reshape(size, count).T).reshape(-1) if size > 1 else planes.copy()
    return torch.from_numpy(raw).view(dtype)


def _decode(record: TensorRecord, stored: dict[str, Tensor]) -> Tensor:
    if record.deflated:
        values_dtype = getattr(torch, record.stored_dtype or record.dtype)
        stored = dict(stored)
        for part in record.deflated:
            dtype = values_dtype if part in (record.name, f"{record.name}::values") else torch.uint8
            stored[part] = _inflate(record, part, stored[part], dtype)
    tensor = _decode_stored(record, stored)
    if record.stored_dtype is not None:
        return tensor.to(getattr(torch, record.dtype))
    return tensor


def _decode_stored(record: TensorRecord, stored: dict[str, Tensor]) -> Tensor:
    if record.encoding == "dense":
        return stored[record.name]
    values = stored[f"{record.name}::values"]
    index = stored[f"{record.name}::{record.encoding}"].numpy()
    if record.encoding == "bitmask":
        kept = np.unpackbits(index, count=record.numel).astype(bool)
    else:
        kept = decode_gaps(index, record.numel)
    if int(kept.sum()) != values.numel():
        raise CheckpointError(
            f"tensor {record.name!r}: the index marks {int(kept.sum())} entries, {values.numel()} stored"
        )
    dense = torch.zeros(record.numel, dtype=values.dtype)
    dense[torch.from_numpy(kept)] = values
    return dense.view(record.shape)


# -- files ------------------------------------------------------------------------------------------------------------


def save_tensors(
    path: str | Path,
    tensors: dict[str, Tensor],
    manifest: dict[str, Any] | None = None,
    *,
    encodings: dict[str, str] | None = None,
    value_dtype: str = "float32",
) -> dict[str, Any]:
    """Write ``tensors`` (zeros = pruned) with the smallest encoding each, and ``manifest`` in the metadata.

    ``value_dtype`` ("float32", "float16", "bfloat16"): the type floating-point values are stored in (float32 keeps
    each tensor's own). Returns the full manifest written. The file appears atomically (temporary file, then rename).
    """
    if value_dtype not in VALUE_DTYPES:
        raise CheckpointError(f"value_dtype must be one of {sorted(VALUE_DTYPES)}, got {value_dtype!r}")
    smaller = None if value_dtype == "float32" else VALUE_DTYPES[value_dtype]
    from safetensors.torch import save_file

    encodings = encodings or {}
    records, stored = {}, {}
    for name, tensor in tensors.items():
        record, parts = _encode(name, tensor, encodings.get(name), smaller)
        records[name] = record
        stored.update(parts)
    from compress import __version__

    full = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        **(manifest or {}),
        "tensors": {name: record.to_json() for name, record in records.items()},
    }
    path = Path(path)
    temporary = path.with_name(path.name + ".partial")
    save_file(stored, str(temporary), metadata={MANIFEST_KEY: json.dumps(full, sort_keys=True)})
    temporary.replace(path)
    return full


# -- reading, bounded --------------------------------------------------------------------------------------------------

# The safetensors header is JSON of a size the file's first 8 bytes declare: read no more than this of it. A sparseq
# manifest holds the recipe, the metrics, the history and the vocabulary (a 1M-word vocabulary is about 10 MiB).
MAX_HEADER_BYTES = 16 << 20
# Decoding materialises every tensor densely, and the gaps encoding stores nothing for trailing zeros, so a tiny file
# can truthfully declare a huge tensor. Loading refuses more than this many entries in all (4 GiB of float32).
MAX_ENTRIES = 1 << 30
MAX_DIMS = 16
DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip
TORCH_DTYPES = {
    "float32": "F32", "float64": "F64", "float16": "F16", "bfloat16": "BF16",
    "int64": "I64", "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL",
}  # fmt: skip


@dataclass(frozen=True)
class StoredEntry:
    """One entry of a safetensors header, checked: its dtype, shape and byte range agree with one another and the
    file."""

    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def _shape(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) > MAX_DIMS:
        raise CheckpointError(f"{where}: the shape must be a list of at most {MAX_DIMS} sizes, got {value!r:.80}")
    if not all(isinstance(size, int) and not isinstance(size, bool) and 0 <= size < 1 << 62 for size in value):
        raise CheckpointError(f"{where}: the shape must hold non-negative integers, got {value!r:.80}")
    return tuple(value)


def data_bytes(path: str | Path) -> int:
    """The bytes of a safetensors file's tensors: the file less its header (the 8-byte length and the JSON it
    declares, which in a sparseq file holds the manifest: recipe, metrics, vocabulary, a sha256 per tensor)."""
    path = Path(path)
    with path.open("rb") as handle:
        length = int.from_bytes(handle.read(8), "little")
    return path.stat().st_size - 8 - length


def read_header(path: str | Path) -> tuple[dict[str, StoredEntry], dict[str, str]]:
    """The stored entries and the metadata of a safetensors file, from its header alone, in bounded memory.

    Every entry is checked against the file before anything else reads it: a known dtype, a shape, a byte range inside
    the file whose length is exactly the shape's size, no two entries overlapping - so whatever is allocated later for
    a stored entry is bounded by the file's own size.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise CheckpointError(
                f"{path.name}: not a readable safetensors file ({size} bytes, shorter than its 8-byte header)"
            )
        length = int.from_bytes(prefix, "little")
        if length > min(MAX_HEADER_BYTES, size - 8):
            raise CheckpointError(
                f"{path.name}: not a readable safetensors file (its header claims {length:,} bytes; the file has "
                f"{size - 8:,} after the length and headers are limited to {MAX_HEADER_BYTES:,})"
            )
        raw = handle.read(length)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise CheckpointError(
            f"{path.name}: not a readable safetensors file (the header is not JSON: {error})"[:300]
        ) from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path.name}: not a readable safetensors file (the header is not a JSON object)")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(f"{path.name}: the safetensors metadata must map names to strings")
    data_bytes = size - 8 - length
    entries = {}
    for name, entry in header.items():
        where = f"{path.name}: entry {name!r:.80}"
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise CheckpointError(f"{where}: must have exactly dtype, shape and data_offsets")
        dtype, shape, offsets = entry["dtype"], _shape(entry["shape"], where), entry["data_offsets"]
        if dtype not in DTYPE_BYTES:
            raise CheckpointError(f"{where}: unknown dtype {dtype!r:.40}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)):
            raise CheckpointError(f"{where}: data_offsets must be two integers")
        start, end = offsets
        if not 0 <= start <= end <= data_bytes:
            raise CheckpointError(f"{where}: bytes {start:,}..{end:,} lie outside the file's {data_bytes:,} data bytes")
        declared = math.prod(shape) * DTYPE_BYTES[dtype]
        if declared != end - start:
            raise CheckpointError(
                f"{where}: its shape {list(shape)} of {dtype} needs {declared:,} bytes, the file gives it "
                f"{end - start:,}"
            )
        entries[name] = StoredEntry(dtype, shape, start, end)
    ranges = sorted((e.start, e.end) for e in entries.values() if e.end > e.start)
    if any(previous_end > start for (_, previous_end), (start, _) in itertools.pairwise(ranges)):
        raise CheckpointError(f"{path.name}: two stored entries overlap")
    return entries, metadata


def _manifest_from(path: Path, metadata: dict[str, str]) -> dict[str, Any]:
    if MANIFEST_KEY not in metadata:
        raise NotACheckpoint(f"{path.name}: no sparseq manifest in the metadata (not a sparseq checkpoint)")
    try:
        manifest = json.loads(metadata[MANIFEST_KEY])
    except (ValueError, RecursionError) as error:
        raise CheckpointError(f"{path.name}: the manifest is not valid JSON ({error})"[:300]) from None
    if not isinstance(manifest, dict):
        raise CheckpointError(f"{path.name}: the manifest is not a JSON object")
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path.name}: format {manifest.get('format')!r:.40} version {manifest.get('format_version')!r:.20}, "
            f"this library reads {FORMAT!r} version {FORMAT_VERSION}"
        )
    if not isinstance(manifest.get("tensors"), dict):
        raise CheckpointError(f"{path.name}: the manifest lists no tensors")
    return manifest


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest alone (cheap: reads only the header)."""
    _, metadata = read_header(path)
    return _manifest_from(Path(path), metadata)


def check_manifest(
    path: str | Path, *, max_entries: int = MAX_ENTRIES
) -> tuple[dict[str, Any], dict[str, TensorRecord]]:
    """The manifest and its tensor records, each checked against the stored entries it names, from the header alone.

    After this, decoding allocates no more than ``max_entries`` dense entries in all, plus what the file itself holds:
    a record's parts exist with the sizes its encoding implies (a dense part of the record's shape, values of its nnz,
    a bitmask of one bit an entry, at least one gap byte per kept entry).
    """
    path = Path(path)
    stored, metadata = read_header(path)
    manifest = _manifest_from(path, metadata)
    records, total = {}, 0
    for name, entry in manifest["tensors"].items():
        where = f"{path.name}: tensor {name!r:.80}"
        try:
            record = TensorRecord(
                name, entry["encoding"], _shape(entry["shape"], where), entry["dtype"], int(entry["nnz"]),
                dict(entry["sha256"]), entry.get("stored_dtype"),
                {str(k): int(v) for k, v in entry.get("deflated", {}).items()},
            )  # fmt: skip
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise CheckpointError(f"{where}: malformed manifest entry ({error})"[:300]) from None
        if record.encoding not in ENCODINGS:
            raise CheckpointError(f"{where}: unknown encoding {record.encoding!r:.40}")
        if record.stored_dtype is not None and (
            record.stored_dtype not in VALUE_DTYPES or record.dtype not in VALUE_DTYPES
        ):
            raise CheckpointError(f"{where}: cannot store {record.dtype} values as {record.stored_dtype!r:.40}")
        if not set(record.deflated) <= set(record.stored) or any(v < 0 for v in record.deflated.values()):
            raise CheckpointError(f"{where}: malformed 'deflated' entry in the manifest")
        if record.dtype not in TORCH_DTYPES:
            raise CheckpointError(f"{where}: unknown dtype {record.dtype!r:.40}")
        if not 0 <= record.nnz <= record.numel:
            raise CheckpointError(f"{where}: nnz {record.nnz:,} is not between 0 and its {record.numel:,} entries")
        total += record.numel
        if total > max_entries:
            raise CheckpointError(
                f"{where}: the checkpoint declares more than {max_entries:,} entries in all (this one has "
                f"{record.numel:,}); refused before anything is allocated"
            )
        for part in record.stored:
            if part not in stored:
                raise CheckpointError(f"{where}: stored entry {part!r:.80} is missing")
        _check_parts(where, record, stored)
        records[name] = record
    return manifest, records


def _check_parts(where: str, record: TensorRecord, stored: dict[str, StoredEntry]) -> None:
    """Each part has the size its encoding implies. A deflated part (zlib bytes) declares its element count in the
    manifest; that count is what is checked, and decoding inflates to no more than it."""
    dtype = TORCH_DTYPES[record.stored_dtype or record.dtype]

    def part(suffix: str | None) -> tuple[str, StoredEntry]:
        key = record.name if suffix is None else f"{record.name}::{suffix}"
        if key not in stored or key not in record.stored:
            raise CheckpointError(f"{where}: stored entry {key!r:.80} is missing")
        return key, stored[key]

    def count_and_dtype(key: str, entry: StoredEntry, element: str) -> tuple[int, str]:
        if key in record.deflated:
            if entry.dtype != "U8" or len(entry.shape) != 1:
                raise CheckpointError(f"{where}: a deflated entry must be a flat uint8 array")
            return record.deflated[key], element
        return entry.numel, entry.dtype

    if record.encoding == "dense":
        key, dense = part(None)
        count, stored_dtype = count_and_dtype(key, dense, dtype)
        shape_ok = count == record.numel if key in record.deflated else dense.shape == record.shape
        if not shape_ok or stored_dtype != dtype:
            raise CheckpointError(f"{where}: stored as {dense.dtype} {list(dense.shape)}, the manifest says "
                                  f"{dtype} {list(record.shape)}")  # fmt: skip
        return
    (values_key, values), (index_key, index) = part("values"), part(record.encoding)
    count, values_dtype = count_and_dtype(values_key, values, dtype)
    if count != record.nnz or values_dtype != dtype:
        raise CheckpointError(f"{where}: {count:,} stored values of {values_dtype}, the manifest says "
                              f"{record.nnz:,} of {dtype}")  # fmt: skip
    index_count, index_dtype = count_and_dtype(index_key, index, "U8")
    if index_dtype != "U8" or (index_key not in record.deflated and len(index.shape) != 1):
        raise CheckpointError(f"{where}: its {record.encoding} index must be a flat uint8 array")
    if record.encoding == "bitmask" and index_count != math.ceil(record.numel / 8):
        raise CheckpointError(f"{where}: a bitmask of {index_count:,} bytes for {record.numel:,} entries")
    if record.encoding == "gaps" and index_count < record.nnz:
        raise CheckpointError(f"{where}: {index_count:,} gap bytes cannot place {record.nnz:,} entries")


def load_tensors(path: str | Path, *, max_entries: int = MAX_ENTRIES) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Decode every tensor, verifying each stored entry's sha256; returns (tensors, manifest).

    The manifest is checked against the header first (:func:`check_manifest`), so a file that lies about its sizes is
    refused with a message before any tensor is allocated."""
    from safetensors.torch import load_file

    manifest, records = check_manifest(path, max_entries=max_entries)
    try:
        stored = load_file(str(path))
    except Exception as error:
        raise CheckpointError(f"{Path(path).name}: cannot read the tensors ({error})") from None
    tensors = {}
    for name, record in records.items():
        for part, digest in record.stored.items():
            if part not in stored:
                raise CheckpointError(f"tensor {name!r}: stored entry {part!r} is missing")
            if _sha256(stored[part]) != digest:
                raise CheckpointError(f"tensor {name!r}: checksum mismatch in {part!r} (the file was modified)")
        tensor = _decode(record, stored)
        if _dtype_name(tensor.dtype) != record.dtype or int((tensor != 0).sum()) != record.nnz:
            raise CheckpointError(f"tensor {name!r}: decoded dtype or non-zero count disagrees with the manifest")
        tensors[name] = tensor
    return tensors, manifest


def tensor_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Logical tensor names and shapes of a weights file, from its header alone (bounded): a sparseq checkpoint's
    manifest records, else a plain safetensors file's entries. For checking ``init_from`` against a recipe."""
    try:
        _, records = check_manifest(path)
        return {name: record.shape for name, record in records.items()}
    except NotACheckpoint:
        pass
    stored, _ = read_header(path)
    return {name: entry.shape for name, entry in stored.items()}
