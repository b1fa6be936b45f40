"""Run a grid of benchmarks/moduli_navigation.py settings in parallel processes and summarise them in one table.

This is how the navigation benchmark's scale rules (how lambda and the space's size must scale with the width) were
searched: each line of the grid file is one set of moduli_navigation.py arguments (``#`` starts a comment); every run
writes its JSON, and the summary gives, per setting, the mean error of each variant, W_hh's surviving share and the
paper-ordering verdicts.

    python benchmarks/moduli_sweep.py grid.txt --jobs 12 --out sweep/ [--device cuda] [--deadline SECONDS]

Each variant of each line runs as its own process (better packing on many cores), lines must not name --variants.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from moduli_navigation import ordering, parse  # noqa: E402


def run_one(index: int, variant: str, arguments: str, out: Path, device: str, timeout: float) -> dict:
    target = out / f"run{index:03d}_{variant}.json"
    command = [sys.executable, str(HERE / "moduli_navigation.py"), *shlex.split(arguments), "--variants", variant]
    command += ["--device", device, "--json", str(target)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        failure = None if done.returncode == 0 else done.stderr.strip().splitlines()[-1:]
    except subprocess.TimeoutExpired:
        failure = [f"timed out after {timeout:.0f}s"]
    result = json.loads(target.read_text()) if target.exists() else {}
    return {"index": index, "variant": variant, "failure": failure, **result}


def merge(grid: list[tuple[str, list[str]]], parts: list[dict]) -> list[dict]:
    """One record per grid line from its per-variant runs (each variant of a line runs as its own process)."""
    runs = []
    for index, (arguments, _) in enumerate(grid):
        mine = [p for p in parts if p["index"] == index]
        run = {"index": index, "arguments": arguments, "failure": [f for p in mine for f in p["failure"] or []]}
        for key in ("errors", "lottery", "sparsity", "diagnostics"):
            run[key] = {k: v for p in mine for k, v in p.get(key, {}).items()}
        runs.append(run)
    return runs


def summarise(runs: list[dict]) -> None:
    variants = sorted({v for run in runs for v in run["errors"]})
    print(f"{'#':>3} {'ordering':<8} " + " ".join(f"{v[:9]:>9}" for v in variants) + "  whh_kept(torus) arguments")
    for run in runs:
        if run["failure"]:
            print(f"{run['index']:>3} FAILED   {run['failure'][:1]}  {run['arguments']}")
        if not run["errors"]:
            continue
        means = [statistics.mean(run["errors"][v]) if v in run["errors"] else float("nan") for v in variants]
        verdict = ordering(run["errors"])
        passed = f"{sum(verdict.values())}/{len(verdict)}"
        torus = run["diagnostics"].get("torus_dog", [])
        kept = statistics.mean(d["whh_kept"] for d in torus) if torus else float("nan")
        print(
            f"{run['index']:>3} {passed:<8} "
            + " ".join(f"{m:>9.2f}" for m in means)
            + f"  {kept:>6.3f}  {run['arguments']}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("grid", type=Path)
    parser.add_argument("--variants", nargs="+", default=["dense", "torus_dog", "permuted_dog", "plain_l1", "no_reg"])
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("sweep"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per run (one variant of one line)")
    parser.add_argument("--deadline", type=float, default=None, help="seconds: runs not started by then are skipped")
    args = parser.parse_args()
    lines = [line.split("#")[0].strip() for line in args.grid.read_text().splitlines()]
    grid = [(line, args.variants) for line in lines if line]
    args.out.mkdir(parents=True, exist_ok=True)
    # Longest first (more --steps), so the pool's tail is short; the steps as moduli_navigation.py reads them.
    tasks = [(i, v, line) for i, (line, variants) in enumerate(grid) for v in variants]
    tasks.sort(key=lambda task: -parse(shlex.split(task[2])).steps)
    print(f"{len(grid)} settings x {len(args.variants)} variants, {args.jobs} at a time on {args.device}", flush=True)
    started = time.time()

    def guarded(task):
        if args.deadline is not None and time.time() - started > args.deadline:
            return {"index": task[0], "variant": task[1], "failure": ["skipped: deadline"]}
        return run_one(task[0], task[1], task[2], args.out, args.device, args.timeout)

    parts: list[dict] = []
    with ThreadPoolExecutor(args.jobs) as pool:
        for part in pool.map(guarded, tasks):
            parts.append(part)
            # Written after every run: a sweep cut short still leaves what it finished.
            (args.out / "summary.json").write_text(json.dumps(merge(grid, parts), indent=1))
    print(f"finished in {time.time() - started:.0f}s", flush=True)
    summarise(merge(grid, parts))


if __name__ == "__main__":
    main()
