"""Cost of one architecture step per hypergradient estimator, relative to first order.

For each space (DARTS: 8 cells, C=16; NAS-Bench-201: C=16, N=5) at batch 64 on random 32x32
inputs, every (estimator, hvp) pair runs in a fresh subprocess that builds the supernet, takes
``--warmup`` untimed architecture steps and then ``--repeats`` timed ones (full configuration: 0
and 1, since a step takes from seconds to minutes on a CPU and the second-order exact step on the
DARTS space is the slowest; quick: 1 and 1). Reported per configuration:

* ``seconds``: median wall time of a timed step, and ``x first``: that time over first order's;
* ``peak MB``: the process's peak resident set size (``getrusage`` ``ru_maxrss``), and
  ``step MB``: its growth over the peak reached after set-up (what the step itself needs), with
  ``x first`` the ratio of the latter to first order's;
* ``|fd-exact|/|corr|``: on the fd rows, the distance between the finite-difference and exact
  gradients of the first step divided by the norm of the exact curvature term (every process
  builds the same network and batches from one seed).

    python bench/bench_estimators.py            # the full configuration (about an hour on one CPU core)
    python bench/bench_estimators.py --quick    # a small configuration that checks the script
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time

import roofline
from _common import maxrss_mb

CONFIGS = [("first-order", None), ("second-order", "fd"), ("second-order", "exact"), ("amended", "fd"),
           ("amended", "exact")]
FULL = {"darts": {"channels": 16, "layers": 8}, "nb201": {"channels": 16, "layers": 5},
        "batch": 64, "size": 32, "warmup": 0, "repeats": 1}
QUICK = {"darts": {"channels": 8, "layers": 3}, "nb201": {"channels": 8, "layers": 1},
         "batch": 16, "size": 16, "warmup": 1, "repeats": 1}


def worker(args: argparse.Namespace) -> None:
    import torch
    from torch import nn

    from dnas.bilevel.problem import BilevelProblem, StepContext
    from dnas.components import ESTIMATORS
    from dnas.components.activations import Softmax
    from dnas.diagnostics.flops import count_work
    from dnas.spaces import get_space
    from dnas.supernet import build_supernet

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    space = get_space(args.space)
    net = build_supernet(space, num_classes=10, in_channels=3, channels=args.channels, layers=args.layers)
    activation = Softmax()
    generator = torch.Generator().manual_seed(0)
    alphas = nn.ParameterDict({t: nn.Parameter(activation.init_alpha(s, generator))
                               for t, s in space.alpha_shapes().items()})
    problem = BilevelProblem(net, alphas, activation)
    ctx = StepContext(weight_lr=0.025)
    batches = [(torch.randn(args.batch, 3, args.size, args.size, generator=generator),
                torch.randint(0, 10, (args.batch,), generator=generator)) for _ in range(2)]
    params = {} if args.hvp is None else {"hvp": args.hvp}
    estimator = ESTIMATORS.get(args.estimator)(**params)

    def step() -> list[float]:
        for a in problem.arch:
            a.grad = None
        estimator.arch_gradient(problem, *batches, ctx)
        return torch.cat([a.grad.reshape(-1) for a in problem.arch]).tolist()

    setup_mb = maxrss_mb()
    grad = None
    for _ in range(args.warmup):  # allocator growth, first-call overheads
        grad = step()
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        g = step()
        times.append(time.perf_counter() - start)
        grad = grad or g
    peak = maxrss_mb()
    with count_work(net) as work:  # one more step, counted (never timed)
        step()
    print(json.dumps({"seconds": statistics.median(times), "times": times, "setup_mb": setup_mb,
                      "peak_mb": peak, "grad": grad, "passes": work.forwards, "flops": work.flops,
                      "flops_by_key": [[*key, flops] for key, flops in work.flops_by_key.items()]}))


def run_config(space: str, estimator: str, hvp: str | None, setting: dict, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--space", space, "--estimator", estimator,
           "--channels", str(setting[space]["channels"]), "--layers", str(setting[space]["layers"]),
           "--batch", str(setting["batch"]), "--size", str(setting["size"]),
           "--warmup", str(setting["warmup"]), "--repeats", str(setting["repeats"]), "--threads", str(threads)]
    if hvp is not None:
        cmd += ["--hvp", hvp]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _norm(values: list[float]) -> float:
    return sum(v * v for v in values) ** 0.5


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small networks and batches (checks the script)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per measurement (default 1)")
    parser.add_argument("--spaces", default="darts,nb201")
    parser.add_argument("--json", help="also write the measurements to this file")
    parser.add_argument("--warmup", type=int, help="untimed steps before the timed ones (default: see above)")
    parser.add_argument("--repeats", type=int, help="timed steps per configuration (default: see above)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--space")
    parser.add_argument("--estimator")
    parser.add_argument("--hvp")
    parser.add_argument("--channels", type=int)
    parser.add_argument("--layers", type=int)
    parser.add_argument("--batch", type=int)
    parser.add_argument("--size", type=int)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return

    import torch

    setting = dict(QUICK if args.quick else FULL)
    for key in ("warmup", "repeats"):
        if getattr(args, key) is not None:
            setting[key] = getattr(args, key)
    if setting["warmup"] < 0 or setting["repeats"] < 1:
        parser.error("--warmup must be >= 0 and --repeats >= 1")
    print(f"# torch {torch.__version__}, python {platform.python_version()}, {platform.machine()}, "
          f"threads {args.threads}, batch {setting['batch']}, {setting['size']}x{setting['size']} inputs, "
          f"{setting['warmup']} warm-up + {setting['repeats']} timed steps, {'quick' if args.quick else 'full'} "
          "configuration")
    header = (f"{'space':6} {'estimator':13} {'hvp':5} {'seconds':>8} {'x first':>8} {'peak MB':>8} "
              f"{'step MB':>8} {'x first':>8} {'|fd-exact|/|corr|':>18} {'passes':>6} {'GFLOP':>7} {'GFLOP/s':>8} "
              f"{'%conv':>6}")
    print(f"# before: {roofline.load_average()}; GFLOP counted (dnas.diagnostics.flops) on one more step, "
          "%conv = achieved rate "
          "over the roofline's conv ceiling")
    results = []
    for space in args.spaces.split(","):
        print(f"\n{space}: {setting[space]}")
        ceilings = roofline.measure(setting[space]["channels"], setting["size"], setting["batch"], args.threads)
        print(roofline.format_table(ceilings))
        print(header)
        rows = {}
        for estimator, hvp in CONFIGS:
            rows[(estimator, hvp)] = run_config(space, estimator, hvp, setting, args.threads)
        base = rows[("first-order", None)]
        base_step = max(base["peak_mb"] - base["setup_mb"], 1e-9)
        for (estimator, hvp), r in rows.items():
            step_mb = r["peak_mb"] - r["setup_mb"]
            agreement = ""
            if hvp == "fd":
                exact = rows[(estimator, "exact")]["grad"]
                correction = _norm([e - f for e, f in zip(exact, base["grad"], strict=True)])
                distance = _norm([a - e for a, e in zip(r["grad"], exact, strict=True)])
                agreement = f"{distance / correction:.3g}"
            percent = roofline.percent_of_ceilings(r["flops_by_key"], r["seconds"], ceilings)["conv"]
            print(f"{space:6} {estimator:13} {hvp or '-':5} {r['seconds']:8.3f} {r['seconds'] / base['seconds']:8.2f} "
                  f"{r['peak_mb']:8.0f} {step_mb:8.0f} {step_mb / base_step:8.2f} {agreement:>18} {r['passes']:6d} "
                  f"{r['flops'] / 1e9:7.2f} {r['flops'] / r['seconds'] / 1e9:8.1f} {percent:6.1f}")
            results.append({"space": space, "estimator": estimator, "hvp": hvp, **setting[space],
                            "batch": setting["batch"], "size": setting["size"],
                            **{k: v for k, v in r.items() if k != "grad"},
                            "time_ratio": r["seconds"] / base["seconds"], "step_mb": step_mb,
                            "memory_ratio": step_mb / base_step})
    print(f"# after: {roofline.load_average()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
