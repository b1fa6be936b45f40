"""Reading a weights file is bounded: the header is checked against the file, the manifest against the header, and a
file that lies about its sizes is refused before anything is allocated for it."""

from __future__ import annotations

import json
import struct
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from compress.checkpoint import (
    MANIFEST_KEY,
    CheckpointError,
    check_manifest,
    load_tensors,
    read_header,
    save_tensors,
    tensor_shapes,
)
from tests.helpers.hostile import lying_checkpoint, raw_safetensors


def test_the_lying_checkpoint_is_refused_before_anything_is_allocated(tmp_path):
    path = tmp_path / "lying.safetensors"
    path.write_bytes(lying_checkpoint())
    assert len(path.read_bytes()) < 1000  # a file of a few hundred bytes
    with pytest.raises(CheckpointError, match=r"declares more than 1,073,741,824 entries .* 2,000,000,000"):
        load_tensors(path)
    # The same file, honest about a size that fits, loads: the refusal is the size, not the file's shape.
    path.write_bytes(lying_checkpoint(entries=1000))
    tensors, _ = load_tensors(path)
    assert tensors["rnn.weight_hh_l0"].shape == (1000,) and tensors["rnn.weight_hh_l0"].sum() == 1.0


def test_loading_the_lying_checkpoint_under_a_small_address_space_fails_cleanly(tmp_path):
    """In a process that could not even allocate the 2 GB the manifest claims, loading ends in the one clear
    CheckpointError, not a MemoryError or a kill: nothing the size of the claim was attempted."""
    path = tmp_path / "lying.safetensors"
    path.write_bytes(lying_checkpoint())
    script = (
        "import re, resource, sys\n"
        "from compress.checkpoint import CheckpointError, load_tensors\n"
        "size = int(re.search(r'VmSize:\\s+(\\d+)', open('/proc/self/status').read()).group(1)) * 1024\n"
        "resource.setrlimit(resource.RLIMIT_AS, (size + (256 << 20), resource.RLIM_INFINITY))\n"
        "try:\n    load_tensors(sys.argv[1])\n"
        "except CheckpointError as error:\n    print('refused:', error)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("refused:"), done.stdout + done.stderr[-2000:]


@pytest.mark.parametrize(
    ("header", "data", "words"),
    [
        ({"w": {"dtype": "F32", "shape": [2_000_000_000], "data_offsets": [0, 4]}}, b"\0" * 4, "needs 8,000,000,000"),
        ({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 400]}}, b"\0" * 4, "lie outside the file"),
        ({"w": {"dtype": "F99", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4, "unknown dtype"),
        ({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4, "non-negative integers"),
        ({"w": {"dtype": "F32", "shape": [1] * 40, "data_offsets": [0, 4]}}, b"\0" * 4, "at most 16 sizes"),
        (
            {
                "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
            },
            b"\0" * 12,
            "overlap",
        ),
    ],
)
def test_a_header_that_disagrees_with_the_file_is_refused(tmp_path, header, data, words):
    path = tmp_path / "w.safetensors"
    path.write_bytes(raw_safetensors(header, data))
    with pytest.raises(CheckpointError, match=words):
        read_header(path)


def test_a_header_length_larger_than_the_file_is_refused_without_reading_it(tmp_path):
    path = tmp_path / "w.safetensors"
    path.write_bytes(struct.pack("<Q", 2**60) + b"{}")
    with pytest.raises(CheckpointError, match="its header claims 1,152,921,504,606,846,976 bytes"):
        read_header(path)


def test_a_manifest_that_disagrees_with_its_stored_entries_is_refused(tmp_path):
    path = tmp_path / "m.safetensors"
    save_tensors(path, {"dense": torch.randn(4, 3), "sparse": torch.zeros(100)}, encodings={"sparse": "bitmask"})
    data = path.read_bytes()
    length = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + length])
    manifest = json.loads(header["__metadata__"][MANIFEST_KEY])
    for name, shape, words in (("dense", [4, 4], "stored as F32 \\[4, 3\\]"), ("sparse", [1000], "a bitmask of 13")):
        changed = json.loads(json.dumps(manifest))
        changed["tensors"][name]["shape"] = shape
        header["__metadata__"][MANIFEST_KEY] = json.dumps(changed)
        path.write_bytes(raw_safetensors(header, data[8 + length :]))
        with pytest.raises(CheckpointError, match=words):
            check_manifest(path)


def test_tensor_shapes_reads_logical_shapes_from_the_header(tmp_path):
    checkpoint = tmp_path / "m.safetensors"
    save_tensors(checkpoint, {"a": torch.zeros(5, 7), "b": torch.randn(3)})
    assert tensor_shapes(checkpoint) == {"a": (5, 7), "b": (3,)}
    plain = tmp_path / "plain.safetensors"
    save_file({"x": torch.zeros(2, 9)}, str(plain))
    assert tensor_shapes(plain) == {"x": (2, 9)}
