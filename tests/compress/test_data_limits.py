"""Archives are checked from their zip headers first and read in chunks: a zip bomb is refused without being
inflated, and a large honest archive is validated in a bounded amount of memory."""

from __future__ import annotations

import tracemalloc
import zipfile

import numpy as np
import pytest

from compress.data import CHUNK_BYTES, MAX_ARCHIVE_MEMBERS
from compress.tasks import validate
from tests.helpers.hostile import npy_header, zip_bomb


def test_a_zip_bomb_is_refused_from_its_headers(tmp_path):
    path = tmp_path / "bomb.npz"
    zip_bomb(path, 256 << 20)
    size = path.stat().st_size
    assert size < 1 << 20  # a quarter of a GiB in under a MiB
    tracemalloc.start()
    result = validate("trajectories", path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert not result.ok and result.refused and result.key == "velocity", result
    assert "is this a zip bomb?" in result.reason and "at most 100:1" in result.reason
    assert peak < 4 << 20  # nothing was inflated


def test_too_many_members_are_refused(tmp_path):
    path = tmp_path / "many.npz"
    np.savez(path, **{f"a{i}": np.zeros(1) for i in range(MAX_ARCHIVE_MEMBERS + 1)})
    result = validate("trajectories", path)
    assert not result.ok and result.refused and f"{MAX_ARCHIVE_MEMBERS + 1} members" in result.reason


def test_a_header_that_promises_more_than_the_member_holds_is_invalid(tmp_path):
    path = tmp_path / "short.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("velocity.npy", npy_header((1000, 1000, 2)) + bytes(64))
        archive.writestr("position.npy", npy_header((1000, 1000, 2)))
        archive.writestr("start.npy", npy_header((1000, 2)))
    result = validate("trajectories", path)
    assert not result.ok and not result.refused and result.key == "velocity"
    assert "declares shape (1000, 1000, 2)" in result.reason


def test_a_large_honest_archive_is_validated_in_bounded_memory(tmp_path):
    n, steps = 500, 2000  # 16 MB per array
    rng = np.random.default_rng(0)
    start = rng.uniform(-0.5, 0.5, (n, 2))
    velocity = rng.normal(0, 0.0005, (n, steps, 2))  # metres a step
    position = start[:, None, :] + np.cumsum(velocity, axis=1)
    path = tmp_path / "large.npz"
    np.savez(path, velocity=velocity, position=position, start=start)
    del velocity, position
    tracemalloc.start()
    result = validate("trajectories", path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert result.ok and result.stats == {"trajectories": n, "steps": steps}
    assert peak < 4 * CHUNK_BYTES, peak  # a few chunks, not the 32 MB of arrays
    # And a value out of the box deep inside the last chunk is still found (the chunks cover everything).
    arrays = dict(np.load(path))
    arrays["position"][-1, -1, 1] = 1.5
    np.savez(path, **arrays)
    assert validate("trajectories", path).key == "position"


@pytest.mark.parametrize("compressed", [False, True])
def test_compressed_and_plain_archives_read_alike(tmp_path, compressed):
    rng = np.random.default_rng(1)
    velocity = rng.normal(0, 0.01, (3, 7, 2)).astype(np.float32)  # metres a step
    arrays = {
        "velocity": velocity,
        "position": np.cumsum(velocity, axis=1),
        "start": np.zeros((3, 2), dtype=np.float32),  # all zeros: compresses very well, and is small
    }
    path = tmp_path / "walks.npz"
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    result = validate("trajectories", path)
    assert result.ok and result.stats == {"trajectories": 3, "steps": 7}, result
