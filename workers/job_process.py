"""One job's compute in a process of its own, under a memory ceiling: ``python -m workers.job_process``.

The worker (workers.execute.run_job) claims the job, copies its files, then starts this process with a JSON request on
stdin and waits for it. Here the address space may grow ``memory_limit_bytes`` beyond what the libraries take
(RLIMIT_AS), so a job that needs more fails with ``out_of_memory`` instead of the kernel killing the worker; the
worker also kills this process when the job passes its time limit. Progress, events and cancellation go through the
database in sessions of this process's own (JobReporter). The outcome is written as JSON to ``result_path``:
``compress.run``'s metrics and report whole, and the paths of its files - the worker records them.

A fresh interpreter rather than a fork: the worker has threads (heartbeat, reaper) and may have run torch, neither
of which a forked child can safely inherit; importing torch here costs about 3 s a job.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import resource
import signal
import sys
from pathlib import Path

PR_SET_PDEATHSIG = 1
OOM_HINT = (
    "; ask for less: a smaller model.hidden_size or training.batch_size, a shorter sequence, or a smaller task "
    "(POST /v1/estimate prices a recipe before it runs)"
)


def _die_with_parent(parent: int) -> None:
    """Linux: the kernel kills this process when the worker that started it dies, so an orphan never trains on."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before the line above ran
        os._exit(1)


def address_space_bytes() -> int:
    with open("/proc/self/status") as status:
        return int(re.search(r"VmSize:\s+(\d+) kB", status.read()).group(1)) * 1024


def apply_memory_ceiling(limit_bytes: int) -> int | None:
    """RLIMIT_AS at what the process holds now plus ``limit_bytes``; returns the ceiling (None where not applied).

    With CUDA the address space cannot be limited (the driver reserves far more than it uses): the ceiling applies
    to each GPU's memory instead (PyTorch's caching allocator refuses allocations past the fraction)."""
    import torch

    if torch.cuda.is_available():
        for device in range(torch.cuda.device_count()):
            total = torch.cuda.get_device_properties(device).total_memory
            torch.cuda.set_per_process_memory_fraction(min(1.0, limit_bytes / total), device)
        return None
    ceiling = address_space_bytes() + limit_bytes
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        ceiling = min(ceiling, hard)
    resource.setrlimit(resource.RLIMIT_AS, (ceiling, hard))
    return ceiling


def is_out_of_memory(error: BaseException) -> bool:
    import torch

    if isinstance(error, MemoryError | torch.OutOfMemoryError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and (
        "can't allocate memory" in text or "not enough memory" in text or "std::bad_alloc" in text
    )


def run(request: dict) -> dict:
    """Run the job's compute; returns the outcome to write (never raises for a job's own failure)."""
    import compress
    from compress.spec import Recipe
    from compress.train import Callbacks, Cancelled
    from service.db import make_engine, make_sessionmaker
    from workers.execute import JobReporter, error_code

    engine = make_engine(request["database_url"])
    reporter = JobReporter(make_sessionmaker(engine), request["job_id"])
    callbacks = Callbacks(
        progress=reporter.progress,
        event=reporter.event,
        cancelled=reporter.cancelled,
        state_path=Path(request["state_path"]),
        progress_every=1.0,
    )
    apply_memory_ceiling(request["memory_limit_bytes"])
    try:
        recipe = Recipe.model_validate(request["recipe"])
        data = {role: Path(path) for role, path in request["data"].items()}
        result = compress.run(recipe, data, callbacks, output_dir=Path(request["output_dir"]))
        return {
            "status": "succeeded",
            "metrics": result.metrics,
            "report": result.report,
            "files": [str(path) for path in result.files],
        }
    except Cancelled:
        return {"status": "cancelled"}
    except BaseException as error:  # a user-facing message; the trace goes to the worker's log (stderr)
        import traceback

        traceback.print_exc()
        if is_out_of_memory(error):
            limit = request["memory_limit_bytes"]
            message = f"the job ran out of memory (its ceiling is {limit:,} bytes beyond the libraries){OOM_HINT}"
            return {"status": "failed", "code": "out_of_memory", "message": message}
        message = str(error) or type(error).__name__
        return {"status": "failed", "code": error_code(error), "message": message[:2000]}
    finally:
        engine.dispose()


def main() -> None:
    request = json.loads(sys.stdin.read())
    _die_with_parent(request["parent_pid"])
    outcome = run(request)
    # The ceiling may leave no room for the JSON: lift it for the last write (the job's memory is already freed or
    # reachable only from here).
    resource.setrlimit(resource.RLIMIT_AS, resource.getrlimit(resource.RLIMIT_AS)[1:] * 2)
    temporary = Path(request["result_path"] + ".partial")
    temporary.write_text(json.dumps(outcome, default=_plain))
    temporary.replace(request["result_path"])


def _plain(value):
    """numpy and torch scalars in metrics and reports become plain numbers."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


if __name__ == "__main__":
    main()
