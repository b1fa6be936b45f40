"""Scaled-down reproduction of the moduli paper's navigation table (Mackey et al., 2024, moduli
regularization).

Position error (cm) at the target sparsity for several geometries against plain L1, no regulariser and the dense model,
plus the lottery re-initialisation column (new random init, same masks, same training with the regulariser on), over
several seeds. Everything the paper fixes is kept (2.2 m box, dt 0.02, 512 DoG place cells, ReLU RNN without bias,
place-cell initial state, cross-entropy, top-3 decoding, magnitude pruning over encoder, W_ih, W_hh and decoder on a
linear schedule - global in the paper, per tensor by default here, see below); what is scaled down is printed with the
table.

Recipe (the scale rules): the strength is scale-free (``ModuliRegularizer(width_exponent=2)``: every weight gets the
regularisation gradient it would get in the 4096-unit model, so ``--strength 0.1`` is the paper's lambda at any width);
the target sparsity is reached at ``--prune-end`` of training and the rest fine-tunes.

What the search found at 256 units (benchmarks/moduli_sweep.py on an H100, 2 seeds per cell, and CPU runs; the raw
tables are in benchmarks/results/):
- Strength: with the scale-free strength, lambda = 0.1 is the largest that does not hurt. lambda = 1 made torus DoG
  worse than no regulariser (34.0 vs 21.7 cm, orthogonal init, 3000 steps) and lambda = 10 broke every regularised
  variant (93-102 cm).
- Pruning scope: the paper's global ranking strips W_hh at small widths (1.7-7% of it kept at 90% overall), because
  W_hh is 20% of the pruned weights at 256 units and 80% at 4096; every sparse variant then lands at 21-28 cm, whatever
  the regulariser. Pruning each tensor to the target (``--prune-scope tensor``, the default here) gives W_hh the
  sparsity it has in the paper and every sparse variant 17-20 cm at 1000 steps.
- Convergence: identity W_hh init reaches the dense error of 5.4 cm within 1000 steps; orthogonal and PyTorch's
  default init need about 3000 (18-20 cm at 1000 steps).
- Training length: at 3000 steps (per-tensor scope, identity init) the sparse variants reach 7.1-8.1 cm, dense 5.0.
- The defaults here (1000 steps, 3 seeds, every variant, lottery; 26 min on this 2-core CPU, one core busy elsewhere):
  sparse variants 18.2-19.6 cm (torus 18.80 +- 0.77, Klein 18.77 +- 1.44, permuted 19.06, plain L1 19.41, none
  19.58), dense 5.48; lottery re-init 30.0-30.4 cm for torus, Klein and permuted alike.
- The paper's ordering does NOT appear at this width: torus DoG 7.85 +- 0.41, permuted DoG 7.53 +- 0.59, plain L1
  7.85 +- 0.18, no regulariser 7.87 +- 0.31 cm (3000 steps, 2 seeds). Unregularised pruning does not fail here
  (the paper: 78.6 cm at 4096 units), so there is no failure for the geometry to prevent; the paper scale
  (``--paper-scale``, GPU hours) remains the test of the claim.
- Identity init makes pruning harmless, for a reason of its own: W_hh = I is already a sparse integrator, and magnitude
  pruning keeps its diagonal (at 1024 units, nearly all 1024 self-connections survive in the 3% of W_hh kept). At
  1024 units with the paper's global scope (90%, 1000 steps, 2 seeds), every sparse variant matches the dense model:
  no regulariser 5.54 +- 0.07, torus DoG 5.58, permuted 5.49, plain L1 5.51, dense 5.64 +- 0.26 cm.
- With random init (3000 steps, lambda 0.1, 2 seeds) pruning does hurt (dense 5.2-5.4 cm, sparse 22-25 cm), but the
  geometry does not help: default init torus DoG 24.20, permuted 22.60, none 23.50, plain L1 25.25; orthogonal init
  torus DoG 22.28, permuted 22.40, none 25.06 +- 3.80, plain L1 24.50.
- Higher sparsity (1000 steps): at 95% torus DoG is the best sparse variant but not clearly, and Klein is not (3 seeds:
  torus 31.40 +- 0.98, circle 32.22, permuted 32.23, Klein 33.66, plain L1 33.74, none 33.81, sphere 33.87 cm; lottery
  re-init 35.5-36.5 cm for torus, Klein and permuted alike); at 98% torus and permuted tie (35.93 cm, 2 seeds) ahead of
  L1 and none (38.8, 38.6 +- 3-4 cm).

- The paper's own setting (default init, input scale 1, global scope, unscaled lambda; 6000 steps, 2 seeds, with and
  without floors) collapses like the paper's table (no regulariser 78 cm, L1 and DoG 95-103 cm, dense 15.5), but not
  because W_ih is cut (it keeps 12-64%): zeroing the inputs after training shows the unregularised model ignoring its
  velocity and losing its start position through a W_hh kept at 5% (W_hh dense: 41.8 cm; per-tensor scope: 59.7),
  and the unscaled lambda alone, with nothing pruned, already gives 98.1 cm (results/..._6000steps.txt).

    python benchmarks/moduli_navigation.py                    # CPU scale (see --help), 3 seeds
    python benchmarks/moduli_navigation.py --paper-scale      # 4096 units, batch 200, 30k steps: GPU only

All variants and seeds train on the same pre-generated trajectories (a pool of batches, cycled) and are evaluated on the
same held-out trajectories, so the table compares the methods and not the data.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compress.moduli import ModuliRegularizer
from compress.problems import NavigationConfig, NavigationProblem
from compress.pruning import Pruner, PruningSchedule, lottery_retrain

# name -> (space, inhibitor, permute); None: no regulariser. "dense" also skips pruning.
VARIANTS = {
    "torus_dog": ("torus", "dog", False),
    "klein_dog": ("klein", "dog", False),
    "circle_dog": ("circle", "dog", False),
    "sphere_dog": ("sphere", "dog", False),
    "permuted_dog": ("torus", "dog", True),
    "plain_l1": ("torus", "standard", False),
    "no_reg": None,
    "dense": None,
}
PRUNED = ("encoder.weight", "rnn.weight_ih_l0", "rnn.weight_hh_l0", "decoder.weight")


@dataclass
class Settings:
    steps: int
    lr: float
    sparsity: float
    prune_end: float  # fraction of training at which the final sparsity is reached
    prune_events: int
    strength: float
    width_exponent: float | None
    space_scale: float | str
    weight_decay: float
    prune_scope: str = "global"
    floors: bool = False
    pruned: tuple[str, ...] = PRUNED  # the tensors pruned; the others stay dense (--dense-tensors)


def make_data(task: NavigationProblem, pool: int, eval_batch: int, seed: int, device: torch.device):
    """Trajectories are simulated on the CPU (seeded, device-independent), then moved to ``device`` once."""
    generator = torch.Generator().manual_seed(seed)
    batches = [tuple(t.to(device) for t in task.batch(generator=generator)[:3]) for _ in range(pool)]
    evaluation = task.batch(eval_batch, generator=torch.Generator().manual_seed(seed + 1))
    return batches, tuple(t.to(device) for t in evaluation)


def recurrent_diagnostics(model) -> dict[str, float]:
    """Every pruned tensor's kept fraction, and the share of W_hh's survivors on its diagonal (self-connections)."""
    parameters = dict(model.named_parameters())
    found = {f"{name}_kept": float((parameters[name] != 0).float().mean()) for name in PRUNED}
    kept = model.rnn.weight_hh_l0.detach() != 0
    total = int(kept.sum())
    found["whh_kept"] = total / kept.numel()
    found["whh_diagonal_share"] = int(kept.diagonal().sum()) / total if total else 0.0
    return found


SHORT = {"encoder.weight": "enc", "rnn.weight_ih_l0": "W_ih", "rnn.weight_hh_l0": "W_hh", "decoder.weight": "dec"}


def evaluate(task: NavigationProblem, model, evaluation, *, without: str | None = None) -> float:
    """Position error (cm) on the held-out trajectories; ``without="velocity"`` or ``"start"`` zeroes that input (a
    model whose error does not change without an input does not use it)."""
    velocity, start, _, position = evaluation
    if without == "velocity":
        velocity = torch.zeros_like(velocity)
    elif without == "start":
        start = torch.zeros_like(start)
    with torch.no_grad():
        return task.position_error_cm(model(velocity, start), position).item()


def train(task, model, variant: str, settings: Settings, batches, seed: int, pruner: Pruner | None = None) -> Pruner:
    """One training run; prunes on the linear schedule unless ``pruner`` (the lottery's fixed masks) is given."""
    spec = VARIANTS[variant]
    regularizer = None
    if spec is not None:
        space, inhibitor, permute = spec
        regularizer = ModuliRegularizer(
            model,
            space=space,
            inhibitor=inhibitor,
            permute=permute,
            strength=settings.strength,
            width_exponent=settings.width_exponent,
            space_scale=settings.space_scale,
            seed=1000 + seed,
        )
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    scheduled = pruner is None and variant != "dense"
    if scheduled:
        end = max(1, round(settings.prune_end * settings.steps))
        schedule = PruningSchedule(settings.sparsity, "linear", start=0, end=end)
        allocation = "global" if settings.prune_scope == "global" else "uniform"
        pruner = Pruner(
            model, settings.pruned, allocation=allocation, per_gate=False, floors=settings.floors, schedule=schedule
        )
        every = max(1, end // settings.prune_events)
    if pruner is not None:
        pruner.attach(optimizer)
    for step in range(settings.steps):
        if scheduled and step > 0 and (step % every == 0 or step == end):
            pruner.update(step)
        velocity, start, targets = batches[step % len(batches)]
        loss = task.loss(model(velocity, start), targets)
        if regularizer is not None:
            loss = loss + regularizer()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return pruner


def run(args) -> None:
    torch.set_num_threads(args.threads)
    config = NavigationConfig(
        hidden_size=args.hidden,
        place_cells=args.place_cells,
        sequence_length=args.sequence_length,
        batch_size=args.batch,
        recurrent_init=args.init,
        velocity_input_scale=args.input_scale,
        start_code_scale=args.input_scale,
    )
    space_scale = args.space_scale if args.space_scale == "auto" else float(args.space_scale)
    settings = Settings(
        args.steps,
        args.lr,
        args.sparsity,
        args.prune_end,
        args.prune_events,
        args.strength,
        None if args.width_exponent < 0 else args.width_exponent,
        space_scale,
        args.weight_decay,
        args.prune_scope,
        args.floors,
        tuple(n for n in PRUNED if SHORT[n] not in args.dense_tensors),
    )
    task = NavigationProblem(config, seed=0)
    device = torch.device(args.device)
    started = time.time()
    batches, evaluation = make_data(task, args.pool, args.eval_batch, seed=12345, device=device)
    print(
        f"# N={config.hidden_size} init={config.recurrent_init} input_scale={args.input_scale}"
        f" place_cells={config.place_cells} seq={config.sequence_length} batch={config.batch_size}"
        f" steps={settings.steps} lr={settings.lr} AdamW wd={settings.weight_decay} sparsity={settings.sparsity}"
        f" reached at {settings.prune_end:.0%} of training ({settings.prune_scope}"
        f"{', floors' if settings.floors else ''}"
        f"{', dense: ' + ' '.join(args.dense_tensors) if args.dense_tensors else ''}), strength={settings.strength}"
        f" width_exponent={settings.width_exponent} space_scale={settings.space_scale} pool={args.pool} batches"
        f" eval={args.eval_batch} trajectories, seeds={args.seeds}, device={device}",
        flush=True,
    )
    results: dict[str, list[float]] = {}
    lottery: dict[str, list[float]] = {}
    sparsity: dict[str, list[float]] = {}
    diagnostics: dict[str, list[dict[str, float]]] = {}
    for variant in args.variants:
        for seed in args.seeds:
            torch.manual_seed(seed)
            model = task.model().to(device)
            t0 = time.time()
            pruner = train(task, model, variant, settings, batches, seed)
            error = evaluate(task, model, evaluation)
            results.setdefault(variant, []).append(error)
            achieved = pruner.report()["total"]["sparsity"] if pruner else 0.0
            sparsity.setdefault(variant, []).append(achieved)
            where = recurrent_diagnostics(model)
            diagnostics.setdefault(variant, []).append(where)
            kept = " ".join(f"{SHORT[n]} {where[f'{n}_kept']:.3f}" for n in PRUNED)
            where["error_without_velocity"] = evaluate(task, model, evaluation, without="velocity")
            where["error_without_start"] = evaluate(task, model, evaluation, without="start")
            line = (
                f"{variant:<14} seed {seed}: {error:6.2f} cm  sparsity {achieved:.3f}  kept: {kept}"
                f" ({where['whh_diagonal_share']:.0%} of W_hh on the diagonal);"
                f" without velocity {where['error_without_velocity']:.1f} cm,"
                f" without start {where['error_without_start']:.1f} cm  ({time.time() - t0:.0f}s)"
            )
            if args.lottery and pruner is not None and variant in args.lottery_variants:
                masks = {name: mask.clone() for name, mask in pruner.masks.items()}
                pruner.squash()
                t1 = time.time()
                lottery_retrain(
                    model,
                    masks,
                    lambda net, fixed, variant=variant, seed=seed: train(
                        task, net, variant, settings, batches, seed, pruner=fixed
                    ),
                    seed=10_000 + seed,
                )
                lottery_error = evaluate(task, model, evaluation)
                lottery.setdefault(variant, []).append(lottery_error)
                line += f"  lottery {lottery_error:6.2f} cm ({time.time() - t1:.0f}s)"
            print(line, flush=True)
    print_table(results, lottery, sparsity)
    verdicts = print_ordering(results)
    print(f"# total {time.time() - started:.0f}s")
    if args.json:
        summary = {
            "args": {k: v for k, v in vars(args).items() if k != "json"},
            "errors": results,
            "lottery": lottery,
            "sparsity": sparsity,
            "diagnostics": diagnostics,
            "ordering": verdicts,
            "seconds": time.time() - started,
        }
        Path(args.json).write_text(json.dumps(summary, indent=1))


def mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):6.2f} +- {spread:5.2f}"


def print_table(results, lottery, sparsity) -> None:
    print(f"\n{'variant':<14}{'error cm':>18}{'lottery re-init cm':>22}{'sparsity':>10}")
    for variant, errors in results.items():
        print(
            f"{variant:<14}{mean_std(errors):>18}{mean_std(lottery.get(variant, [])):>22}"
            f"{statistics.mean(sparsity[variant]):>10.3f}"
        )


GOOD = ("torus_dog", "klein_dog")
BAD = ("plain_l1", "no_reg")
CLOSE_TO_DENSE = 2.0  # "close to dense": at most this multiple of the dense error


def ordering(results: dict[str, list[float]]) -> dict[str, bool]:
    """The paper's ordering, on the means: torus/Klein DoG best of the sparse models and close to dense; plain L1 and
    no regulariser worst. "Clearly": the gap also exceeds the seed spread of both sides."""
    mean = {v: statistics.mean(e) for v, e in results.items()}
    spread = {v: statistics.stdev(e) if len(e) > 1 else 0.0 for v, e in results.items()}
    good = [v for v in GOOD if v in mean]
    bad = [v for v in BAD if v in mean]
    middle = [v for v in mean if v not in GOOD and v not in BAD and v != "dense"]
    verdicts = {}

    def separated(name: str, lower: list[str], higher: list[str]) -> None:
        top, bottom = max(lower, key=mean.get), min(higher, key=mean.get)
        gap = mean[bottom] - mean[top]
        verdicts[name] = gap > 0
        verdicts[f"{name}, clearly (gap > both seed spreads)"] = gap > max(spread[top], spread[bottom])

    if good and (middle or bad):
        separated("torus/Klein DoG best sparse", good, middle + bad)
    if good and "dense" in mean:
        verdicts[f"torus/Klein DoG within {CLOSE_TO_DENSE:g}x dense"] = all(
            mean[v] <= CLOSE_TO_DENSE * mean["dense"] for v in good
        )
    if bad and (good or middle):
        separated("plain L1 / no regulariser worst", good + middle, bad)
    return verdicts


def print_ordering(results: dict[str, list[float]]) -> dict[str, bool]:
    verdicts = ordering(results)
    for name, ok in verdicts.items():
        print(f"{'PASS' if ok else 'MISS'}  {name}")
    return verdicts


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--place-cells", type=int, default=512)
    parser.add_argument("--sequence-length", type=int, default=20)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--prune-end", type=float, default=2 / 3)
    parser.add_argument("--prune-events", type=int, default=10)
    parser.add_argument(
        "--prune-scope", default="tensor", choices=["global", "tensor"], help="the paper: global (see the docstring)"
    )
    parser.add_argument(
        "--floors", action="store_true", help="keep each row's and column's largest weight (compress.pruning floors)"
    )
    parser.add_argument(
        "--dense-tensors",
        nargs="*",
        default=[],
        choices=list(SHORT.values()),
        help="left out of pruning (a diagnostic: which tensor's pruning costs the error)",
    )
    parser.add_argument("--strength", type=float, default=0.1)
    parser.add_argument("--width-exponent", type=float, default=2.0, help="negative: the paper's unscaled lambda")
    parser.add_argument("--space-scale", default="1.0", help="'auto' (neuron density rule) or a factor")
    parser.add_argument("--pool", type=int, default=200, help="pre-generated training batches, cycled")
    parser.add_argument("--eval-batch", type=int, default=500)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--no-lottery", dest="lottery", action="store_false")
    parser.add_argument(
        "--lottery-variants",
        nargs="+",
        default=["torus_dog", "klein_dog", "permuted_dog"],
        choices=list(VARIANTS),
        help="variants that also get the lottery re-init run (the paper reports torus, Klein, permuted)",
    )
    parser.add_argument("--init", default="identity", choices=["default", "identity", "orthogonal"])
    parser.add_argument("--input-scale", type=float, default=50.0, help="velocity and start-code input factor")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, ...")
    parser.add_argument("--json", default=None, help="also write every number to this JSON file")
    parser.add_argument("--paper-scale", action="store_true", help="4096 units, seq 50, batch 200, 30k steps, lr 1e-4")
    args = parser.parse_args(argv)
    if args.paper_scale:
        args.hidden, args.sequence_length, args.batch, args.steps, args.lr = 4096, 50, 200, 30_000, 1e-4
        args.weight_decay, args.pool, args.init, args.input_scale = 0.01, 1000, "default", 1.0
        args.prune_scope = "global"
    if not 0 < args.prune_end <= 1 or not math.isfinite(args.prune_end):
        parser.error(f"--prune-end must be in (0, 1], got {args.prune_end}")
    return args


if __name__ == "__main__":
    run(parse())
