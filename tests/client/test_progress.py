"""``--wait``'s progress on stderr (sparseq.cli.ProgressDisplay), fed job snapshots through the SDK's own wait
bookkeeping (Watch, which calls on_update when a snapshot changed): a bounded number of lines in a log or a pipe, one
bar on a terminal."""

from __future__ import annotations

import io
import itertools
import os
import re
import select

import pytest
from sparseq._base import Watch
from sparseq._models import Job
from sparseq.cli import ProgressDisplay


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def snapshot(status: str, progress: float, live: dict | None = None) -> Job:
    return Job(id="job_x", status=status, recipe={}, progress=progress, live=live, created_at=0)


def fourteen_minute_job(poll_s: float = 2.0):
    """(seconds since the start, snapshot) every ``poll_s`` seconds: queued, then a reference run and the main run's
    train, prune and fine-tune phases over 14 minutes, the training step moving on every poll, an evaluation of the
    metric at the end of each phase, then succeeded."""
    phases = [("reference", 0.0, 0.25), ("train", 0.25, 0.4), ("prune", 0.4, 0.8), ("fine_tune", 0.8, 1.0)]
    total_s, steps = 14 * 60, 400
    yield 0.0, snapshot("queued", 0.0)
    t, value = poll_s, None
    while t < total_s:
        progress = t / total_s
        phase, start, end = next(p for p in phases if p[1] <= progress < p[2])
        evaluated = [p for p in phases if p[2] <= progress]  # phases finished so far: one evaluation each
        value = 100.0 - len(evaluated) if evaluated else None
        step = round(steps * (progress - start) / (end - start))
        live = {"phase": phase, "step": step, "total_steps": steps, "loss": 5.0 - progress, "eta_s": total_s - t}
        live |= {"metric": "valid_perplexity", "value": value, "sparsity": 0.9 * progress}
        yield t, snapshot("running", progress, live)
        t += poll_s
    yield t, snapshot("succeeded", 1.0, {"phase": "fine_tune", "step": steps, "total_steps": steps, "value": 96.0})


def follow(snapshots, stream, clock, **settings) -> list[str]:
    display = ProgressDisplay("job_x", stream, clock=clock, **settings)
    watch = Watch("job job_x", None, 2.0, display.update)
    for at, job in snapshots:
        clock.now = at
        watch.observe(job)
    display.close()
    return stream.getvalue().splitlines()


def test_a_log_gets_a_line_per_milestone_and_a_heartbeat_not_one_per_poll():
    clock = Clock()
    snapshots = list(fourteen_minute_job())
    lines = follow(snapshots, io.StringIO(), clock, heartbeat_s=60, percent_step=10)
    assert len(snapshots) == 421  # what the old display printed: one line per poll
    # the bound the rule gives: 3 statuses + 4 phases + 10 crossings of 10% + 4 evaluations + 14 minutes of heartbeats
    assert 14 <= len(lines) <= 3 + 4 + 10 + 4 + 14, lines
    assert all(line.startswith("job_x: ") for line in lines)
    shown = "\n".join(lines)
    for phase in ("reference", "train", "prune", "fine_tune"):
        assert f"running, {phase} step" in shown
    assert lines[0] == "job_x: 0% queued" and lines[-1] == "job_x: 100% succeeded"
    for value in (99, 98, 97):  # every new evaluation of the metric is shown
        assert f"valid_perplexity {value}," in shown
    percents = [int(re.match(r"job_x: (\d+)%", line).group(1)) for line in lines]
    assert {p // 10 for p in percents} == set(range(11))  # each 10% step is seen


def test_a_job_that_only_moves_its_step_prints_a_heartbeat_a_minute():
    clock = Clock()
    live = {"phase": "train", "total_steps": 10_000}
    snapshots = [(2.0 * i, snapshot("running", 0.5, live | {"step": i})) for i in range(450)]  # 15 minutes at 50%
    lines = follow(snapshots, io.StringIO(), clock, heartbeat_s=60)
    assert len(lines) == 1 + 898 // 60  # the first line, then one every 60 s of the 898 s
    steps = [int(re.search(r"step (\d+)/", line).group(1)) for line in lines]
    assert [b - a for a, b in itertools.pairwise(steps)] == [30] * (len(steps) - 1)  # 60 s apart


def test_a_terminal_gets_one_bar_with_no_leading_comma_even_when_it_reports_no_width():
    master, replica = os.openpty()  # a fresh pty reports 0 rows and 0 columns
    try:
        with os.fdopen(replica, "w", closefd=False) as stream:
            assert os.get_terminal_size(replica).columns == 0
            clock = Clock()
            job = snapshot("running", 0.4, {"phase": "prune", "step": 3, "total_steps": 10, "loss": 2.5})
            display = ProgressDisplay("job_x", stream, clock=clock)
            display.update(job)
            stream.flush()
            drawn = b""
            while select.select([master], [], [], 0.5)[0]:
                drawn += os.read(master, 65536)
            drawn = drawn.decode()
            display.close()
    finally:
        os.close(master)
        os.close(replica)
    last = drawn.split("\r")[-1].strip()
    assert re.fullmatch(r"job_x:  40%\|█{8}\s{12}\| running, prune step 3/10, loss 2\.5", last), repr(drawn)


@pytest.mark.parametrize("step", [5, 25])
def test_the_percent_step_is_a_setting(step):
    clock = Clock()
    live = {"phase": "train", "total_steps": 100}
    snapshots = [(float(i), snapshot("running", i / 100, live | {"step": i})) for i in range(101)]
    lines = follow(snapshots, io.StringIO(), clock, heartbeat_s=1e9, percent_step=step)
    assert len(lines) == 100 // step + 1
