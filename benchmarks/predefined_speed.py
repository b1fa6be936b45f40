"""Forward+backward speed of the predefined-sparse LSTM (Demeester et al., "Predefined Sparseness in Recurrent Sequence
Models", CoNLL 2018: recurrent layers), side by side with its baselines.

For each dense size n (input = hidden = n) and each k in 2, 4, 8, the sparse layer gets the dense layer's parameter
count: its input density is fixed (default delta = 1/k, disjoint input windows; ``--density-factor f`` gives
delta = min(1, f/k)) and its hidden size H_s is solved for, so that the sparse layer has the dense count within 1%.
Every variant reads the same input of n features (seq 35, batch 20, PTB-style) and is timed for one training step:
zero the gradients, forward, ``output.sum().backward()`` (the input requires grad, as after an embedding).

  (a)  sparse auto     SparseLSTM() as users get it: formulation "auto" resolves per device and size (the loop on
                       CPU; see compress/predefined/recurrent.py); when it resolves to "masked", row (a:loop) times
                       the loop formulation of the same layer (one fused native LSTM call per component)
  (b)  dense           torch.nn.LSTM(n, n), the reference of every ratio
  (c)  masked dense    torch.nn.LSTM(n, H_s) whose weights are multiplied by the 0/1 masks of
                       SparseLSTM.dense_equivalent() on every forward
  (c') sparse masked   SparseLSTM(formulation="masked"): dense-equivalent weights assembled with index_put
  (d)  k modules       k separate torch.nn.LSTM run one after another in a Python loop on their input windows,
                       outputs concatenated (the authors' way)
  (a:flashrnn)         on CUDA with the optional flashrnn package: SparseLSTM(formulation="flashrnn"), the
                       block-diagonal recurrence in one fused kernel; its (a:flashrnn)/(b) line settles whether "auto"
                       should take it (FLASHRNN_AUTO_MAX_HIDDEN in compress/predefined/recurrent.py)

All variants of one size start from the same weights and are checked to compute the same output before timing. Steps
are interleaved (every repetition runs every variant once, in a shuffled order) and the table gives the median.
Targets (printed PASS/MISS, never asserted): (a)/(b) <= 1.15 at every k; (a) faster than (c) and (c'); (a) never
slower than (d).

    .venv/bin/python benchmarks/predefined_speed.py [--sizes 200,650] [--repeats N] [--threads T] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import random
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from compress.predefined import SparseLSTM, dense_parameter_count, flashrnn_kernel
from compress.predefined.layout import LayerLayout

SEQ_LEN = 35
BATCH = 20
COMPONENTS = (2, 4, 8)
PARAM_TOLERANCE = 0.01  # sparse parameter count within 1% of the dense one
TARGET_DENSE_RATIO = 1.15  # (a)/(b) at most this
GATES = 4
NOISY_SPREAD = 0.25  # warn when a row's interquartile range exceeds this fraction of its median


@dataclass(frozen=True)
class SparseSize:
    """A sparse LSTM shape with (about) the dense parameter count."""

    components: int
    input_density: float
    hidden_size: int
    parameters: int  # of the layout, = sum(p.numel()) of the built SparseLSTM


@dataclass
class Variant:
    """One timed row: a module and the function that runs it on the input."""

    key: str  # "a", "b", "c", "c'", "d"
    label: str
    k: int | None
    hidden_size: int
    module: nn.Module
    run: Callable[[Tensor], Tensor]
    times: list[float]


@dataclass(frozen=True)
class ResultRow:
    key: str
    label: str
    k: int | None
    hidden_size: int
    parameters: int
    median_ms: float
    min_ms: float
    iqr_ms: tuple[float, float]  # 25th and 75th percentiles
    ratio_to_dense: float

    @property
    def spread(self) -> float:
        """Interquartile range relative to the median: how much the machine disturbed this row."""
        return (self.iqr_ms[1] - self.iqr_ms[0]) / self.median_ms


# -- sizes -------------------------------------------------------------------------------------------------------------


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def solve_sparse_size(n_in: int, dense_params: int, k: int, density: float) -> SparseSize:
    """The hidden size whose sparse layer (n_in inputs, k components, fixed density) is closest to dense_params.

    Sparse count ~ G*(delta*n_in*H + H^2/k + 2H): solve the quadratic, then search the integers around its root with
    the exact layout count (window lengths are rounded, k need not divide H).
    """
    linear = density * n_in + 2
    root = k / 2 * (-linear + math.sqrt(linear * linear + 4 * dense_params / (GATES * k)))
    best = None
    for hidden in range(max(k, math.floor(root) - 2 * k), math.ceil(root) + 2 * k + 1):
        count = LayerLayout.build(n_in, hidden, k, density).parameter_count(GATES)
        if best is None or abs(count - dense_params) < abs(best.parameters - dense_params):
            best = SparseSize(k, density, hidden, count)
    assert best is not None
    return best


# -- variants ----------------------------------------------------------------------------------------------------------


class MaskedDenseLSTM(nn.Module):
    """A dense ``nn.LSTM(n_in, H_s)`` trained through 0/1 masks: weight * mask on every forward (variant c)."""

    def __init__(self, sparse: SparseLSTM) -> None:
        super().__init__()
        self.lstm = nn.LSTM(sparse.input_size, sparse.hidden_size, device=_device_of(sparse))
        self.names = [name for name, _ in self.lstm.named_parameters()]
        equivalent = sparse.dense_equivalent()
        with torch.no_grad():
            for name in self.names:
                weight, mask = equivalent[name]
                getattr(self.lstm, name).copy_(weight)
                self.register_buffer(f"mask_{name}", mask)

    def forward(self, x: Tensor) -> Tensor:
        weights = [getattr(self.lstm, name) * getattr(self, f"mask_{name}") for name in self.names]
        zeros = x.new_zeros(1, x.size(1), self.lstm.hidden_size)
        with warnings.catch_warnings():  # cuDNN re-packs freshly masked weights every call, which is what (c) measures
            warnings.filterwarnings("ignore", message="RNN module weights are not part of single contiguous")
            output, *_ = torch.lstm(x, (zeros, zeros), weights, True, 1, 0.0, self.training, False, False)
        return output


class SeparateLSTMs(nn.Module):
    """k ``nn.LSTM`` modules run one after another on their input windows, outputs concatenated (variant d)."""

    def __init__(self, sparse: SparseLSTM) -> None:
        super().__init__()
        layout = sparse.layouts[0]
        self.windows = list(layout.windows)
        self.lstms = nn.ModuleList(
            nn.LSTM(length, h, device=_device_of(sparse))
            for h, (_, length) in zip(layout.hidden_sizes, layout.windows, strict=True)
        )
        with torch.no_grad():
            for c, lstm in enumerate(self.lstms):
                for param, source in zip(lstm.parameters(), sparse.component_parameters(0, c), strict=True):
                    param.copy_(source)

    def forward(self, x: Tensor) -> Tensor:
        outputs = []
        for lstm, (start, length) in zip(self.lstms, self.windows, strict=True):
            outputs.append(lstm(x[..., start : start + length])[0])
        return torch.cat(outputs, -1)


def _device_of(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def build_variants(n: int, sizes: list[SparseSize], device: torch.device) -> list[Variant]:
    dense = nn.LSTM(n, n, device=device)
    variants = [Variant("b", "dense nn.LSTM", None, n, dense, lambda x, m=dense: m(x)[0], [])]
    for size in sizes:
        k, hidden = size.components, size.hidden_size
        sparse = SparseLSTM(n, hidden, components=k, input_density=size.input_density).to(device)
        chosen = sparse._resolved_formulation(device)
        variants.append(Variant("a", f"SparseLSTM auto={chosen}", k, hidden, sparse, lambda x, m=sparse: m(x)[0], []))
        # The other formulation of the same layer, for "let the benchmark decide" (c' is always the masked one).
        others = [("a:loop", "loop")] if chosen != "loop" else []
        if chosen != "flashrnn" and flashrnn_kernel.unsupported_reason(sparse, device) is None:
            others.append(("a:flashrnn", "flashrnn"))
        for key, formulation in [*others, ("c'", "masked")]:
            twin = SparseLSTM(n, hidden, components=k, input_density=size.input_density, formulation=formulation)
            twin = twin.to(device)
            twin.load_state_dict(sparse.state_dict())
            if formulation == "flashrnn":
                try:  # the kernels compile on first use; a failure here is a finding, not a crash of the whole run
                    twin(torch.zeros(2, 1, n, device=device))
                except Exception as error:
                    print(f"  k={k}: flashrnn skipped: {type(error).__name__}: {str(error)[:300]}")
                    continue
            label = f"SparseLSTM {formulation}"
            variants.append(Variant(key, label, k, hidden, twin, lambda x, m=twin: m(x)[0], []))
        masked, separate = MaskedDenseLSTM(sparse), SeparateLSTMs(sparse)
        variants += [
            Variant("c", "masked dense (w*mask)", k, hidden, masked, masked, []),
            Variant("d", f"{k} nn.LSTM, Python loop", k, hidden, separate, separate, []),
        ]
    return variants


def check_same_function(variants: list[Variant], x: Tensor) -> float:
    """Largest output difference between each sparse variant and (a) of the same k (all should compute one function).

    Run with autograd on, as timed: the native kernels take another path under ``torch.no_grad``.
    """
    reference = {v.k: v.run(x).detach() for v in variants if v.key == "a"}
    worst = 0.0
    for v in variants:
        if v.k is not None and v.key != "a":
            worst = max(worst, (v.run(x).detach() - reference[v.k]).abs().max().item())
    return worst


# -- timing ------------------------------------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step(variant: Variant, x: Tensor) -> None:
    variant.module.zero_grad(set_to_none=True)
    x.grad = None
    variant.run(x).sum().backward()


def time_step(variant: Variant, x: Tensor, device: torch.device, clock: Callable[[], float]) -> float:
    synchronize(device)
    start = clock()
    train_step(variant, x)
    synchronize(device)
    return clock() - start


def measure(
    variants: list[Variant],
    x: Tensor,
    device: torch.device,
    repeats: int,
    warmup: int,
    seed: int,
    clock: Callable[[], float] = time.perf_counter,
) -> None:
    """Warm every variant up, then run `repeats` rounds; each round times one step of every variant, shuffled."""
    for variant in variants:
        for _ in range(warmup):
            train_step(variant, x)
    order = list(variants)
    shuffle = random.Random(seed)
    for _ in range(repeats):
        shuffle.shuffle(order)
        gc.collect()
        for variant in order:
            variant.times.append(time_step(variant, x, device, clock))


def summarize(variants: list[Variant]) -> list[ResultRow]:
    dense_ms = statistics.median(next(v for v in variants if v.key == "b").times) * 1e3
    rows = []
    for v in variants:
        median_ms = statistics.median(v.times) * 1e3
        quartiles = statistics.quantiles(v.times, n=4) if len(v.times) > 1 else [v.times[0]] * 3
        rows.append(
            ResultRow(
                v.key,
                v.label,
                v.k,
                v.hidden_size,
                parameter_count(v.module),
                median_ms,
                min(v.times) * 1e3,
                (quartiles[0] * 1e3, quartiles[2] * 1e3),
                median_ms / dense_ms,
            )
        )
    return rows


# -- report ------------------------------------------------------------------------------------------------------------


def print_table(rows: list[ResultRow]) -> None:
    header = f"  {'row':<11} {'variant':<26} {'k':>2} {'H':>5} {'params':>10} {'median ms':>10} {'min ms':>9}"
    print(f"{header} {'IQR ms':>15} {'/ (b)':>6}")
    for r in rows:
        k = "-" if r.k is None else str(r.k)
        print(
            f"  {'(' + r.key + ')':<11} {r.label:<26} {k:>2} {r.hidden_size:>5} {r.parameters:>10,} "
            f"{r.median_ms:>10.1f} {r.min_ms:>9.1f} {r.iqr_ms[0]:>7.1f}-{r.iqr_ms[1]:<7.1f} {r.ratio_to_dense:>6.2f}"
        )


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def print_targets(rows: list[ResultRow]) -> dict[str, bool]:
    by = {(r.key, r.k): r for r in rows}
    b = by[("b", None)]
    ks = sorted({r.k for r in rows if r.k is not None})
    results = {}
    print("  targets (verdict on the medians):")
    for k in ks:
        a, c, c2, d = by[("a", k)], by[("c", k)], by[("c'", k)], by[("d", k)]
        checks = {
            f"k={k} (a)/(b) <= {TARGET_DENSE_RATIO}": (a, b, lambda ratio: ratio <= TARGET_DENSE_RATIO),
            f"k={k} (a) faster than (c)": (a, c, lambda ratio: ratio < 1),
            f"k={k} (a) faster than (c')": (a, c2, lambda ratio: ratio < 1),
            f"k={k} (a) not slower than (d)": (a, d, lambda ratio: ratio <= 1),
        }
        for name, (row, other, holds) in checks.items():
            ratio = row.median_ms / other.median_ms
            ok = holds(ratio)
            # A miss smaller than the rows' own spread is not a measured difference: say so (the verdict stays).
            noise = "  within the rows' spread" if not ok and abs(ratio - 1) < max(row.spread, other.spread) else ""
            print(
                f"    {verdict(ok)}  {name:<34} median ratio {ratio:.3f}  (min ratio {row.min_ms / other.min_ms:.3f})"
                f"{noise}"
            )
            results[name] = ok
        candidates = [r for r in rows if r.k == k and (r.key == "a" or r.key.startswith("a:") or r.key == "c'")]
        fastest = min(candidates, key=lambda r: r.median_ms)
        print(f"    fastest SparseLSTM formulation at k={k}: {fastest.label} ({fastest.median_ms:.2f} ms)")
        for row in (r for r in candidates if r.key.startswith("a:")):
            ratio = row.median_ms / b.median_ms
            ok = verdict(ratio <= TARGET_DENSE_RATIO)
            print(f"    ({row.key})/(b) at k={k}: {ratio:.3f}  {ok} <= {TARGET_DENSE_RATIO}")
    return results


# -- main --------------------------------------------------------------------------------------------------------------


def parse_sizes(text: str) -> list[int]:
    sizes = [int(part) for part in text.split(",") if part.strip()]
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive sizes, got {text!r}")
    return sizes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=parse_sizes, default=None, help="dense sizes n (default 200,650)")
    parser.add_argument("--repeats", type=int, default=None, help="timed steps per variant (default 7, quick 3)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps per variant (default 2, quick 1)")
    parser.add_argument(
        "--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch.set_num_threads (default all cores)"
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--density-factor", type=float, default=1.0, help="input density delta = min(1, f/k)")
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="time with process CPU time, not wall clock (CPU only; steady on a shared machine with --threads 1, "
        "but it adds up every thread, spin-waits included)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="sizes 200 only, 3 repeats, 1 warm-up (well under 1 min)")
    args = parser.parse_args(argv)
    if args.sizes is None:
        args.sizes = [200] if args.quick else [200, 650]
    if args.repeats is None:
        args.repeats = 3 if args.quick else 7
    if args.warmup is None:
        args.warmup = 1 if args.quick else 2
    if args.repeats < 1 or args.warmup < 0 or args.threads < 1:
        parser.error("--repeats and --threads must be >= 1, --warmup >= 0")
    if args.cpu_time and args.device != "cpu":
        parser.error("--cpu-time measures the host CPU: use it with --device cpu")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but CUDA is not available")
    return args


def run_size(n: int, args: argparse.Namespace, device: torch.device) -> dict[str, bool]:
    dense_params = dense_parameter_count("lstm", n, n)
    sizes = [solve_sparse_size(n, dense_params, k, min(1.0, args.density_factor / k)) for k in COMPONENTS]
    print(f"\n== dense n={n} (input {n}, hidden {n}); dense LSTM parameters {dense_params:,}")
    torch.manual_seed(args.seed)
    variants = build_variants(n, sizes, device)
    built = {v.k: parameter_count(v.module) for v in variants if v.key in ("a", "b")}
    for size in sizes:
        sparse_params = built[size.components]
        error = sparse_params / built[None] - 1
        within = abs(error) <= PARAM_TOLERANCE
        print(
            f"  k={size.components}: delta={size.input_density:.4f} H_s={size.hidden_size}: sparse {sparse_params:,} "
            f"vs dense {built[None]:,} parameters ({error:+.2%}, {'within' if within else 'NOT within'} 1%)"
        )
    x = torch.randn(SEQ_LEN, BATCH, n, device=device, requires_grad=True)
    print(f"  max |output - output of (a)| over (c), (c'), (d): {check_same_function(variants, x):.2e}")
    started = time.perf_counter()
    clock = time.process_time if args.cpu_time else time.perf_counter
    measure(variants, x, device, args.repeats, args.warmup, args.seed, clock)
    clock_name = "process CPU time" if args.cpu_time else "wall clock"
    print(
        f"  fwd+bwd per step, median of {args.repeats} interleaved steps, {clock_name} "
        f"({time.perf_counter() - started:.0f} s):"
    )
    rows = summarize(variants)
    print_table(rows)
    noisy = [f"({r.key}) k={r.k}" if r.k else f"({r.key})" for r in rows if r.spread > NOISY_SPREAD]
    if noisy:
        print(
            f"  NOISY: interquartile range above {NOISY_SPREAD:.0%} of the median for {', '.join(noisy)}; the machine "
            "was busy. Compare the min column, rerun with more --repeats, or with --threads 1 (--cpu-time)."
        )
    return {f"n={n} {name}": ok for name, ok in print_targets(rows).items()}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"torch {torch.__version__}, device {args.device} ({name}), threads {torch.get_num_threads()}")
    print(
        f"seq {SEQ_LEN}, batch {BATCH}, k in {COMPONENTS}, sizes {args.sizes}, repeats {args.repeats}, "
        f"warm-up {args.warmup}, density delta = min(1, {args.density_factor:g}/k)"
    )
    started = time.perf_counter()
    results: dict[str, bool] = {}
    for n in args.sizes:
        results.update(run_size(n, args, device))
    missed = [name for name, ok in results.items() if not ok]
    elapsed = time.perf_counter() - started
    print(f"\nsummary: {len(results) - len(missed)}/{len(results)} targets PASS; total {elapsed:.0f} s")
    for name in missed:
        print(f"  MISS {name}")


if __name__ == "__main__":
    main()
