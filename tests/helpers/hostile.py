"""Files built to hurt: a zip bomb, a checkpoint whose header lies about its size."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zipfile

import numpy as np

from compress.checkpoint import FORMAT, FORMAT_VERSION, MANIFEST_KEY


def raw_safetensors(header: dict, data: bytes = b"") -> bytes:
    """A safetensors file written by hand (the format: 8-byte little-endian header length, JSON header, data)."""
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def npy_header(shape: tuple[int, ...], dtype: str = "<f8") -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def lying_checkpoint(entries: int = 2_000_000_000) -> bytes:
    """A sparseq checkpoint whose manifest says one gaps-encoded tensor of ``entries`` entries, storing one value and
    one gap byte: what issue 12 used as init_from to kill a worker three times."""
    value, gap = struct.pack("<f", 1.0), bytes([0])
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "tensors": {
            "rnn.weight_hh_l0": {
                "encoding": "gaps",
                "shape": [entries],
                "dtype": "float32",
                "nnz": 1,
                "sparsity": 1.0,
                "sha256": {
                    "rnn.weight_hh_l0::values": hashlib.sha256(value).hexdigest(),
                    "rnn.weight_hh_l0::gaps": hashlib.sha256(gap).hexdigest(),
                },
            }
        },
    }
    header = {
        "__metadata__": {MANIFEST_KEY: json.dumps(manifest)},
        "rnn.weight_hh_l0::gaps": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]},
        "rnn.weight_hh_l0::values": {"dtype": "F32", "shape": [1], "data_offsets": [1, 5]},
    }
    return raw_safetensors(header, gap + value)


def zip_bomb(path, uncompressed: int) -> None:
    """An npz whose velocity.npy is ``uncompressed`` bytes of zeros (deflated ~1000:1), written in chunks."""
    count = uncompressed // 8 // 2
    zero = bytes(1 << 20)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("velocity.npy", "w", force_zip64=True) as member:
            member.write(npy_header((1, count, 2)))
            left = count * 2 * 8
            while left:
                member.write(zero[: min(left, len(zero))])
                left -= min(left, len(zero))
        archive.writestr("position.npy", npy_header((1, count, 2)))
        archive.writestr("start.npy", npy_header((1, 2)) + bytes(16))
