"""sparseq: the command line of the sparseq service (talks HTTP only).

    export SPARSEQ_API_KEY=sk_...                    # and SPARSEQ_URL if not http://127.0.0.1:8000
    sparseq files upload ptb.train.txt --purpose lm_text
    sparseq jobs create recipe.yaml --file train=file_... --file valid=file_... --wait
    sparseq jobs download job_... --dir out/
    sparseq estimate recipe.yaml

Objects are printed as JSON (``jq`` friendly), lists one object per line. Progress goes to stderr. Exit status: 0 when
it worked (for ``--wait``: the job succeeded), 1 when the API refused or the job did not succeed, 2 for a bad command.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx

from sparseq._client import SWEEP_KEYS, Sparseq
from sparseq._exceptions import SparseqError
from sparseq._models import TERMINAL


class UsageError(Exception):
    pass


def load_recipe(path: str) -> dict[str, Any]:
    """A recipe from a JSON or YAML file (YAML needs PyYAML), or ``-`` for JSON on stdin."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as error:
        raise UsageError(f"cannot read the recipe {path}: {error.strerror}") from None
    if path.endswith((".yaml", ".yml")):
        try:
            import yaml
        except ImportError:
            raise UsageError("a YAML recipe needs PyYAML (pip install pyyaml), or give the recipe as JSON") from None
        try:
            recipe = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise UsageError(f"{path} is not valid YAML: {error}") from None
    else:
        try:
            recipe = json.loads(text)
        except json.JSONDecodeError as error:
            raise UsageError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(recipe, dict):
        raise UsageError(f"{path}: a recipe is a mapping (task, model, method, training)")
    return recipe


def parse_roles(pairs: list[str]) -> dict[str, str]:
    roles = {}
    for pair in pairs:
        role, sep, file_id = pair.partition("=")
        if not sep or not role or not file_id:
            raise UsageError(f"--file takes ROLE=FILE_ID (e.g. train=file_abc), got {pair!r}")
        roles[role] = file_id
    return roles


def _data(obj: Any) -> Any:
    return obj.to_dict() if hasattr(obj, "to_dict") else obj


def show(obj: Any) -> None:
    print(json.dumps(_data(obj), indent=2))


def show_lines(objects) -> None:
    for obj in objects:
        print(json.dumps(_data(obj)), flush=True)


def describe_live(job) -> str:
    """One line of what a job is doing: status, phase, step, loss, metric, sparsity, time left."""
    job = _data(job)
    live = job.get("live") or {}
    parts = [job["status"]]
    if live and job["status"] in ("running", "cancelling"):
        parts.append(f"{live['phase']} step {live['step']}/{live['total_steps']}")
        if live.get("loss") is not None:
            parts.append(f"loss {live['loss']:.4g}")
        if live.get("value") is not None:
            parts.append(f"{live['metric']} {live['value']:.4g}")
        if live.get("sparsity") is not None:
            parts.append(f"sparsity {live['sparsity']:.1%}")
        if live.get("eta_s") is not None:
            parts.append(f"{_duration(live['eta_s'])} left")
    return ", ".join(parts)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else (f"{minutes}m{secs:02d}s" if minutes else f"{secs}s")


class ProgressDisplay:
    """``--wait``'s feedback on stderr. On a terminal: one updating bar (tqdm). Elsewhere (a log, a pipe): a line only
    when something a reader cares about changed - the status, the phase, the progress crossing a step of
    ``percent_step`` percent, a new evaluation of the metric - and otherwise at most one line every ``heartbeat_s``
    seconds, so a job that moves its training step on every poll does not write a line per poll. The verdict and the
    warnings are printed after the wait (:func:`wait_and_report`), whatever this shows."""

    def __init__(
        self, job_id: str, stream=None, *, heartbeat_s: float = 60.0, percent_step: int = 10, clock=None
    ) -> None:
        import time

        self.job_id, self.stream = job_id, stream or sys.stderr
        self.heartbeat_s, self.percent_step, self.clock = heartbeat_s, percent_step, clock or time.monotonic
        self.bar = None
        self.milestone: tuple | None = None  # what was true at the last line printed
        self.printed_at: float | None = None
        self.printed: tuple | None = None
        if self.stream.isatty():
            self.bar = _progress_bar(job_id, self.stream)

    def update(self, job) -> None:
        text = describe_live(job)
        percent = round(100 * job.progress)
        if self.bar is not None:
            self.bar.n = percent
            self.bar.status = text
            self.bar.refresh()
            return
        live = job.live
        milestone = (
            job.status,
            live.phase if live is not None else None,
            percent // self.percent_step,
            (live.metric, live.value) if live is not None and live.value is not None else None,
        )
        now = self.clock()
        beat = self.printed_at is not None and now - self.printed_at >= self.heartbeat_s
        if milestone != self.milestone or (beat and (text, percent) != self.printed):
            print(f"{self.job_id}: {percent}% {text}", file=self.stream, flush=True)
            self.milestone, self.printed_at, self.printed = milestone, now, (text, percent)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


_BAR = "{desc}: {percentage:3.0f}%|{bar:20}| {status}"
_FALLBACK_COLUMNS = 80  # a terminal that reports no width (a fresh pty says 0 columns and 0 rows)


def _window(fp) -> tuple[int, int | None]:
    """The bar's width and the rows tqdm may use, as tqdm's own dynamic_ncols measures them (the terminal's less one),
    but :data:`_FALLBACK_COLUMNS` wide and tqdm's default rows where the terminal reports none: tqdm would draw a
    0-column terminal's bar at width -1 and, with -1 rows, draw nothing at all."""
    try:
        columns, rows = os.get_terminal_size(fp.fileno())
    except (AttributeError, OSError, ValueError):
        columns, rows = 0, 0
    return (columns - 1 if columns > 0 else _FALLBACK_COLUMNS), (rows - 1 if rows > 1 else None)


def _progress_bar(job_id: str, stream):
    """A tqdm bar whose text after the bar is ``status`` as given (tqdm's own postfix starts with ', '), resized with
    the terminal (:func:`_window`)."""
    from tqdm import tqdm

    class Bar(tqdm):
        status = ""

        @property
        def format_dict(self):
            return super().format_dict | {"status": self.status}

    columns, rows = _window(stream)
    bar = Bar(total=100, desc=job_id, unit="%", file=stream, bar_format=_BAR, ncols=columns, nrows=rows)
    bar.dynamic_ncols = _window  # what tqdm calls (with its file) to measure the terminal before each draw
    return bar


def verdict_lines(job) -> list[str]:
    """How the job ended, against its reference, and what to look at before trusting it."""
    job = _data(job)
    metrics = job.get("metrics") or {}
    lines = []
    if job["status"] == "succeeded" and metrics.get("name"):
        line = f"{metrics['name']} {metrics['value']:.4g}"
        if metrics.get("reference") is not None:
            verdict = "within" if metrics.get("within_tolerance") else "OUTSIDE"
            line += (
                f" against {metrics['reference']:.4g} for the reference ({metrics['reference_kind']}): "
                f"{metrics['ratio']:.3g}x, {verdict} the quality tolerance"
            )
        if metrics.get("sparsity") is not None:
            line += f"; sparsity {metrics['sparsity']:.1%}"
        lines.append(line)
    for warning in job.get("warnings") or []:
        lines.append(f"warning {warning['code']}: {warning['message']}")
    return lines


def wait_and_report(sparseq: Sparseq, job_id: str, timeout: float | None) -> int:
    display = ProgressDisplay(job_id)
    try:
        job = sparseq.jobs.wait(job_id, timeout=timeout, on_update=display.update)
    finally:
        display.close()
    show(job)
    for line in verdict_lines(job):
        print(line, file=sys.stderr)
    if job.status != "succeeded":
        detail = f": {job.error.code}: {job.error.message}" if job.error else ""
        print(f"job {job_id} {job.status}{detail}", file=sys.stderr)
        return 1
    return 0


def load_sweep(path: str) -> dict[str, Any]:
    body = load_recipe(path)
    unknown = sorted(set(body) - set(SWEEP_KEYS))
    if unknown or "recipe" not in body:
        what = f"unknown keys {unknown}" if unknown else "no recipe"
        raise UsageError(f"{path}: {what}; a sweep file holds {', '.join(SWEEP_KEYS)}")
    return body


def sweep_line(sweep) -> str:
    counts = ", ".join(f"{n} {status}" for status, n in sweep.progress.items() if n)
    return f"{sweep.id}: {sweep.status}, {sweep.combinations} combinations ({counts or 'none started'})"


def run(args: argparse.Namespace) -> int:
    try:
        sparseq = Sparseq(args.api_key, args.url)  # --api-key, else SPARSEQ_API_KEY
    except (ValueError, httpx.InvalidURL) as error:  # no key, a malformed one, a bad URL (never showing the key)
        raise UsageError(str(error)) from None
    with sparseq:
        command = (args.group, args.command)
        if command == ("files", "upload"):
            show(sparseq.files.upload(args.path, purpose=args.purpose))
        elif command == ("files", "list"):
            show_lines(sparseq.files.list(purpose=args.purpose))
        elif command in (("files", "get"), ("files", "retrieve")):
            show(sparseq.files.retrieve(args.id))
        elif command == ("files", "download"):
            print(sparseq.files.download(args.id, args.output, overwrite=args.force))
        elif command == ("files", "delete"):
            show(sparseq.files.delete(args.id))
        elif command == ("jobs", "create"):
            recipe, roles = load_recipe(args.recipe), parse_roles(args.file)
            job = sparseq.jobs.create(recipe, files=roles, idempotency_key=args.idempotency)
            if args.wait:
                print(job.id, file=sys.stderr)
                return wait_and_report(sparseq, job.id, args.timeout)
            show(job)
        elif command == ("jobs", "list"):
            show_lines(sparseq.jobs.list(status=args.status))
        elif command in (("jobs", "get"), ("jobs", "retrieve")):
            show(sparseq.jobs.retrieve(args.id))
        elif command == ("jobs", "wait"):
            return wait_and_report(sparseq, args.id, args.timeout)
        elif command == ("jobs", "cancel"):
            show(sparseq.jobs.cancel(args.id))
        elif command == ("jobs", "events"):
            show_lines(sparseq.jobs.events(args.id))
        elif command == ("jobs", "download"):
            for path in sparseq.jobs.download(args.id, args.dir, overwrite=args.force):
                print(path)
        elif command == ("tasks", None):
            listing = sparseq.tasks.list()
            show_lines(listing.data)
            print("purposes: " + ", ".join(listing.purposes), file=sys.stderr)
        elif command == ("sweeps", "create"):
            sweep = sparseq.sweeps.create(**load_sweep(args.sweep), idempotency_key=args.idempotency)
            if args.wait:
                print(sweep.id, file=sys.stderr)
                sweep = sparseq.sweeps.wait(
                    sweep.id, timeout=args.timeout, on_update=lambda s: print(sweep_line(s), file=sys.stderr)
                )
                show(sweep)
                return 0 if sweep.status == "succeeded" else 1
            show(sweep)
        elif command == ("sweeps", "list"):
            show_lines(sparseq.sweeps.list())
        elif command == ("sweeps", "retrieve"):
            show(sparseq.sweeps.retrieve(args.id))
        elif command == ("sweeps", "cancel"):
            show(sparseq.sweeps.cancel(args.id))
        elif command == ("sweeps", "download"):
            for path in sparseq.sweeps.download(args.id, args.dir, jobs=args.jobs, overwrite=args.force):
                print(path)
        elif command == ("estimate", None):
            recipe = load_recipe(args.recipe)
            show(sparseq.estimate(recipe, vocab_size=args.vocab_size, num_tags=args.num_tags))
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="sparseq", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    root.add_argument("--url", help="the service (default: $SPARSEQ_URL, else http://127.0.0.1:8000)")
    root.add_argument("--api-key", help="default: $SPARSEQ_API_KEY")
    groups = root.add_subparsers(dest="group", required=True)

    files = groups.add_parser("files", help="upload, list, download and delete datasets and weights")
    commands = files.add_subparsers(dest="command", required=True)
    upload = commands.add_parser("upload", help="stream a file to the service")
    upload.add_argument("path")
    upload.add_argument("--purpose", required=True, help="what the file is for: `sparseq tasks` lists the purposes")
    listing = commands.add_parser("list", help="every file, newest first, one JSON object per line")
    listing.add_argument("--purpose", help="only files of this purpose")
    for name in ("get", "retrieve", "delete"):
        commands.add_parser(name).add_argument("id")
    download = commands.add_parser("download", help="a file's bytes, checked against its sha256")
    download.add_argument("id")
    download.add_argument("-o", "--output", help="default: the file's name, in the current directory")
    download.add_argument("--force", action="store_true", help="replace an existing file")

    jobs = groups.add_parser("jobs", help="submit, follow, cancel jobs and download their artifacts")
    commands = jobs.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="submit a recipe (JSON or YAML file, - for JSON on stdin)")
    create.add_argument("recipe")
    create.add_argument("--file", action="append", default=[], metavar="ROLE=FILE_ID", help="e.g. train=file_...")
    create.add_argument("--idempotency", metavar="KEY", help="the same key and recipe never make a second job")
    create.add_argument("--wait", action="store_true", help="follow the job to its end (exit 1 unless it succeeds)")
    create.add_argument("--timeout", type=float, help="with --wait: give up waiting after this many seconds")
    listing = commands.add_parser("list", help="every job, newest first, one JSON object per line")
    listing.add_argument("--status", choices=("validating", "queued", "running", "cancelling", *TERMINAL))
    for name in ("get", "retrieve", "cancel", "events"):
        commands.add_parser(name).add_argument("id")
    wait = commands.add_parser("wait", help="follow a job to its end (exit 1 unless it succeeds)")
    wait.add_argument("id")
    wait.add_argument("--timeout", type=float)
    download = commands.add_parser("download", help="every artifact of a job, each checked against its sha256")
    download.add_argument("id")
    download.add_argument("-d", "--dir", default=".", help="default: the current directory")
    download.add_argument("--force", action="store_true", help="replace existing files")

    tasks = groups.add_parser("tasks", help="the tasks a recipe can name, the files each takes, every upload purpose")
    tasks.set_defaults(command=None)
    sweeps = groups.add_parser("sweeps", help="run a grid of recipes as jobs and read its summary")
    commands = sweeps.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="submit a sweep file (YAML or JSON: recipe, grid, overrides, files)")
    create.add_argument("sweep")
    create.add_argument("--idempotency", metavar="KEY", help="the same key and body never make a second sweep")
    create.add_argument("--wait", action="store_true", help="follow the sweep to its end (exit 1 unless it succeeds)")
    create.add_argument("--timeout", type=float, help="with --wait: give up waiting after this many seconds")
    commands.add_parser("list", help="every sweep, newest first, one JSON object per line")
    for name in ("retrieve", "cancel"):
        commands.add_parser(name).add_argument("id")
    download = commands.add_parser("download", help="the sweep's summary.json, summary.csv and pareto.png")
    download.add_argument("id")
    download.add_argument("-d", "--dir", default=".", help="default: the current directory")
    download.add_argument("--jobs", action="store_true", help="also every child job's artifacts, in DIR/<job id>/")
    download.add_argument("--force", action="store_true", help="replace existing files")

    estimate = groups.add_parser("estimate", help="parameters, checkpoint size, FLOPs and memory of a recipe")
    estimate.add_argument("recipe")
    estimate.add_argument("--vocab-size", type=int)
    estimate.add_argument("--num-tags", type=int)
    estimate.set_defaults(command=None)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return run(args)
    except UsageError as error:
        print(f"sparseq: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a local file that cannot be read or written
        print(f"sparseq: {error}", file=sys.stderr)
        return 1
    except SparseqError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except TimeoutError as error:
        print(f"sparseq: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted (a job goes on running: sparseq jobs cancel ID stops it)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
