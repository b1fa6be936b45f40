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


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest alone (cheap: reads only the header)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except Exception as error:  # safetensors raises its own error types for a broken header
        raise CheckpointError(f"{Path(path).name}: not a readable safetensors file ({error})") from None
    if MANIFEST_KEY not in metadata:
        raise CheckpointError(f"{Path(path).name}: no sparseq manifest in the metadata (not a sparseq checkpoint)")
    try:
        manifest = json.loads(metadata[MANIFEST_KEY])
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{Path(path).name}: the manifest is not valid JSON ({error})") from None
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{Path(path).name}: format {manifest.get('format')!r} version {manifest.get('format_version')!r}, "
            f"this library reads {FORMAT!r} version {FORMAT_VERSION}"
        )
    return manifest


def load_tensors(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Decode every tensor, verifying each stored entry's sha256; returns (tensors, manifest)."""
    from safetensors.torch import load_file

    manifest = read_manifest(path)
    try:
        stored = load_file(str(path))
    except Exception as error:
        raise CheckpointError(f"{Path(path).name}: cannot read the tensors ({error})") from None
    tensors = {}
    for name, entry in manifest["tensors"].items():
        try:
            record = TensorRecord(
                name,
                entry["encoding"],
                tuple(entry["shape"]),
                entry["dtype"],
                int(entry["nnz"]),
                entry["sha256"],
                entry.get("stored_dtype"),
                {str(k): int(v) for k, v in entry.get("deflated", {}).items()},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise CheckpointError(f"tensor {name!r}: malformed manifest entry ({error})") from None
        if record.encoding not in ENCODINGS:
            raise CheckpointError(f"tensor {name!r}: unknown encoding {record.encoding!r}")
        if record.stored_dtype is not None and (
            record.stored_dtype not in VALUE_DTYPES or record.dtype not in VALUE_DTYPES
        ):
            raise CheckpointError(f"tensor {name!r}: cannot store {record.dtype} values as {record.stored_dtype!r}")
        if not set(record.deflated) <= set(record.stored) or any(v < 0 for v in record.deflated.values()):
            raise CheckpointError(f"tensor {name!r}: malformed 'deflated' entry in the manifest")
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
