"""sparseqd worker --gpus: which GPUs a worker command pins its processes to."""

from __future__ import annotations

import subprocess
import sys

import pytest

from service.cli import parse_gpus


def test_gpu_lists_and_all():
    assert parse_gpus("0,1") == [0, 1]
    assert parse_gpus("all", count=3) == [0, 1, 2]
    for bad in ("x", "0,0", "-1", ""):
        with pytest.raises(SystemExit):
            parse_gpus(bad)


def test_all_without_a_gpu_says_so_and_exits_non_zero(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "worker", "--gpus", "all", "--data-dir", str(tmp_path)],
        env={"CUDA_VISIBLE_DEVICES": "", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and "no GPU" in done.stderr
