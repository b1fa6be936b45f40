"""How fast could any predefined-sparse LSTM be? The floor of benchmarks/predefined_speed.py's (a)/(b) target.

At the dense layer's parameter count the sparse layer has more hidden units (H_s > n: 1.6x at k=2 to 3.5x at k=8 for
n = 200), so it does the same multiply-adds as the dense layer but more per-unit work (gate nonlinearities, cell
update, state traffic), whichever way its components are run. This script measures the native LSTM kernel (oneDNN on
CPU, cuDNN on CUDA) on a grid of dense shapes no larger than the dense layer itself, fits

    T(n_in, H) = a * weights + b * H + c,        weights = 4 H (n_in + H)

(one forward+backward step, seq 35, batch 20, as in predefined_speed.py), and prints, for each n and k, the ratio an
ideal sparse kernel would reach: one call at the native kernel's own cost per weight and per unit, doing exactly the
sparse layer's weights and H_s units, against the dense layer, T(W, H_s) / T(W, n). No formulation built from these
kernels can beat that ratio, short of a kernel cheaper per unit than the vendor's fused LSTM. Where the fit is poor
(on CPU at n = 1500 the dense weights no longer fit in cache, and the smaller components run faster per weight than
the dense layer, so the sparse layer beats it) the script says so and gives no floor.

    .venv/bin/python benchmarks/predefined_floor.py [--sizes 200,650] [--threads T] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from predefined_speed import (
    BATCH,
    COMPONENTS,
    GATES,
    SEQ_LEN,
    TARGET_DENSE_RATIO,
    Variant,
    measure,
    parse_sizes,
    solve_sparse_size,
)

from compress.predefined import dense_parameter_count

MAX_FIT_ERROR = 0.10  # a fit worse than this on its own shapes does not describe the kernel


def step_time(n_in: int, hidden: int, device: torch.device, repeats: int) -> float:
    """Median seconds of one forward+backward step of ``nn.LSTM(n_in, hidden)``, timed as predefined_speed.py times
    its rows (two warm-up steps)."""
    lstm = nn.LSTM(n_in, hidden, device=device)
    row = Variant("b", f"nn.LSTM({n_in}, {hidden})", None, hidden, lstm, lambda x: lstm(x)[0], [])
    x = torch.randn(SEQ_LEN, BATCH, n_in, device=device, requires_grad=True)
    measure([row], x, device, repeats, warmup=2, seed=0)
    return statistics.median(row.times)


def fit(n: int, device: torch.device, repeats: int) -> tuple[list[float], list[tuple[int, int, float, float]]]:
    """Least squares in relative error over n_in in {8, n/4, n/2, n} x H in {n/4, n/2, 3n/4, n}."""
    shapes = [(n_in, h) for n_in in (8, n // 4, n // 2, n) for h in (n // 4, n // 2, 3 * n // 4, n)]
    measured = [(n_in, h, step_time(n_in, h, device, repeats)) for n_in, h in shapes]
    features = torch.tensor([[GATES * h * (n_in + h), h, 1.0] for n_in, h, _ in measured], dtype=torch.float64)
    seconds = torch.tensor([t for *_, t in measured], dtype=torch.float64)
    weight = 1 / seconds
    coefficients = torch.linalg.lstsq(features * weight[:, None], (seconds * weight)[:, None]).solution.squeeze(1)
    predicted = features @ coefficients
    rows = [(n_in, h, t, p) for (n_in, h, t), p in zip(measured, predicted.tolist(), strict=True)]
    return coefficients.tolist(), rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=parse_sizes, default=[200, 650], help="dense sizes n (default 200,650)")
    parser.add_argument("--repeats", type=int, default=9, help="timed steps per shape (median)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(
        f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, seq {SEQ_LEN}, batch {BATCH}"
    )
    for n in args.sizes:
        (a, b, c), rows = fit(n, device, args.repeats)
        worst = max(abs(p / t - 1) for *_, t, p in rows)
        print(f"\n== n={n}: T = {a * 1e9:.3f} ns/weight * weights + {b * 1e6:.2f} us/unit * H + {c * 1e3:.2f} ms")
        print(f"  fit over {len(rows)} shapes (n_in 8..{n}, H {n // 4}..{n}), worst relative error {worst:.1%}")
        dense = dense_parameter_count("lstm", n, n)
        weights = GATES * n * 2 * n
        dense_fit = a * weights + b * n + c
        dense_measured = next(t for n_in, h, t, _ in rows if n_in == n and h == n)
        print(f"  dense nn.LSTM({n}, {n}): measured {dense_measured * 1e3:.2f} ms, fit {dense_fit * 1e3:.2f} ms")
        if worst > MAX_FIT_ERROR or c < 0:
            # Cost per weight is not constant here (the dense weights leave the cache; block-diagonal ones need not):
            # the model does not describe this size, so it bounds nothing.
            print(
                f"  the linear model does not hold at n={n} (worst error above {MAX_FIT_ERROR:.0%} or c < 0): no floor"
            )
            continue
        print(f"  {'k':>3} {'H_s':>5} {'units / n':>9} {'floor (a)/(b)':>14}  target <= {TARGET_DENSE_RATIO}")
        for k in COMPONENTS:
            size = solve_sparse_size(n, dense, k, min(1.0, 1 / k))
            # Equal parameter counts and 2 H bias entries per gate: the sparse layer's weights are the dense ones
            # less the extra biases of its extra units.
            sparse_weights = size.parameters - 2 * GATES * size.hidden_size
            floor = (a * sparse_weights + b * size.hidden_size + c) / dense_fit
            verdict = "reachable" if floor <= TARGET_DENSE_RATIO else "out of reach"
            print(f"  {k:>3} {size.hidden_size:>5} {size.hidden_size / n:>9.2f} {floor:>14.2f}  {verdict}")


if __name__ == "__main__":
    main()
