"""The sparse checkpoint format: exact round trips, the smallest encoding, and refusal of damaged files."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from compress.checkpoint import (
    CheckpointError,
    decode_gaps,
    encode_gaps,
    information_bound_bytes,
    load_tensors,
    read_manifest,
    save_tensors,
)


def pruned(shape, sparsity, seed=0, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    tensor = torch.randn(shape, generator=generator, dtype=dtype)
    keep = torch.rand(shape, generator=generator) >= sparsity
    return tensor * keep


@settings(max_examples=80, deadline=None)
@given(st.lists(st.booleans(), max_size=400), st.integers(0, 700), st.integers(0, 700))
def test_gap_stream_round_trips_including_long_runs(bits, lead, tail):
    kept = np.array([False] * lead + bits + [False] * tail, dtype=bool)
    stream = encode_gaps(kept)
    assert np.array_equal(decode_gaps(stream, kept.size), kept)
    # Independent size: one byte per kept entry plus one escape byte per full 255 zeros before it.
    positions = np.flatnonzero(kept)
    before = np.diff(positions, prepend=-1) - 1
    assert stream.size == positions.size + int((before // 255).sum())


@pytest.mark.parametrize("encoding", ["dense", "bitmask", "gaps", None])
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 0.99, 1.0])
def test_every_encoding_round_trips_exactly(tmp_path, encoding, sparsity):
    tensors = {"w": pruned((37, 53), sparsity), "b": pruned((53,), 0.0, seed=1), "scalar": torch.tensor(3.5)}
    path = tmp_path / "model.safetensors"
    save_tensors(path, tensors, {"metrics": {"ppl": 123.4}}, encodings={"w": encoding} if encoding else None)
    loaded, manifest = load_tensors(path)
    for name, tensor in tensors.items():
        assert torch.equal(loaded[name], tensor), name
        assert loaded[name].dtype == tensor.dtype
    record = manifest["tensors"]["w"]
    assert record["nnz"] == int((tensors["w"] != 0).sum())
    assert math.isclose(record["sparsity"], 1 - record["nnz"] / tensors["w"].numel(), abs_tol=1e-6)
    assert manifest["metrics"] == {"ppl": 123.4}
    assert read_manifest(path) == manifest


def test_other_dtypes_round_trip(tmp_path):
    tensors = {
        "half": pruned((40, 40), 0.9, dtype=torch.float16),
        "bf16": pruned((40, 40), 0.9).to(torch.bfloat16),
        "double": pruned((40, 40), 0.5, dtype=torch.float64),
        "ids": torch.arange(10),
    }
    save_tensors(tmp_path / "m.safetensors", tensors)
    loaded, _ = load_tensors(tmp_path / "m.safetensors")
    for name, tensor in tensors.items():
        assert torch.equal(loaded[name], tensor) and loaded[name].dtype == tensor.dtype


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.8, 0.9, 0.98])
def test_automatic_choice_is_the_smallest_file(tmp_path, sparsity):
    tensors = {"w": pruned((300, 300), sparsity)}
    sizes = {}
    for encoding in ("dense", "bitmask", "gaps"):
        path = tmp_path / f"{encoding}.safetensors"
        save_tensors(path, tensors, encodings={"w": encoding})
        sizes[encoding] = path.stat().st_size
    path = tmp_path / "auto.safetensors"
    manifest = save_tensors(path, tensors)
    chosen = manifest["tensors"]["w"]["encoding"]
    assert sizes[chosen] == min(sizes.values()) or sizes[chosen] - min(sizes.values()) < 300  # header differences
    assert path.stat().st_size <= min(sizes.values()) + 300


def test_file_shrinks_towards_the_information_bound(tmp_path):
    numel = 500 * 500
    for sparsity in (0.9, 0.95, 0.98, 0.99):
        tensor = pruned((500, 500), sparsity, seed=2)
        path = tmp_path / "w.safetensors"
        save_tensors(path, {"w": tensor})
        bound = information_bound_bytes(numel, int((tensor != 0).sum()))
        assert path.stat().st_size < 1.25 * bound + 2048, sparsity


def test_tampered_tensor_is_named(tmp_path):
    path = tmp_path / "m.safetensors"
    save_tensors(path, {"encoder": pruned((64, 64), 0.9), "decoder": pruned((64, 64), 0.0, seed=3)})
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # the last stored bytes belong to one entry's data
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_tensors(path)


def test_truncated_and_foreign_files_are_refused(tmp_path):
    path = tmp_path / "m.safetensors"
    save_tensors(path, {"w": pruned((64, 64), 0.9)})
    data = path.read_bytes()
    (tmp_path / "short.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"short\.safetensors"):
        load_tensors(tmp_path / "short.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_tensors(tmp_path / "junk.safetensors")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(3)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(CheckpointError, match="no sparseq manifest"):
        load_tensors(tmp_path / "plain.safetensors")


def test_reserved_names_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="may not contain '::'"):
        save_tensors(tmp_path / "m.safetensors", {"a::values": torch.zeros(2)})
