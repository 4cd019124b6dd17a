"""Exact against finite-difference Hessian-vector products: time, arithmetic, and where the time goes.

On a first-order DARTS search (random images), with ``v`` a random weight-sized vector and ``L`` the
training loss, five computations are timed in one process, interleaved and repeated (median of
``--repeats`` after one untimed round), and their convolution and matrix-product FLOPs counted
(``dnas.diagnostics.flops``, one untimed call each):

* ``pass``: one forward + backward w.r.t. the weights (the unit every estimator is made of);
* ``fd``: ``H v`` and then ``H u`` with ``u = H v`` by central differences (four passes);
* ``exact``: the same two products by double backward: one forward, one ``create_graph`` backward,
  two backward passes through that graph (``estimator.hvp=exact``);
* ``fd-mixed`` / ``exact-mixed``: second order's product ``grad^2_{alpha,w} L . v`` (two passes
  w.r.t. alpha; or forward, ``create_graph`` backward w.r.t. the weights, one backward w.r.t. alpha).

The FLOP ratio is a floor for the time ratio at equal efficiency: counting a convolution's forward as
one unit, a weight pass is 3 units and an alpha pass 2, so ``fd`` is 12 and ``fd-mixed`` 4, while the
exact products pay 1 + 2 for the graph and then, per product, the derivatives of every op of the
gradient graph: 6 units w.r.t. the weights, 4 w.r.t. alpha -- 15 and 7, i.e. at least 1.25x and
1.75x their finite differences before any kernel is slower (Amended-DARTS' pair, one weight and one
mixed product: 13 against 10 units, 1.3x).

``--profile N`` also prints the N ops with the most self time in one ``fd`` and one ``exact`` call.

    python bench/bench_hvp.py                          # NB201 C=16, N=2, batch 64, 32x32, 2 threads
    python bench/bench_hvp.py --space darts --layers 5 --profile 12
"""

from __future__ import annotations

import argparse
import statistics

import roofline
import torch
from _common import iterate, search_at_last_epoch, time_calls


def main(argv: list[str] | None = None) -> None:
    from dnas.bilevel.autodiff import gradients, make_hvp, replay_randomness
    from dnas.diagnostics.flops import count_work

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", default="nb201")
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--layers", type=int, default=2, help="NB201: cells per stage; DARTS: cells")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", type=int, default=0, metavar="N")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.profile < 0:
        raise SystemExit("--repeats must be at least 1 and --profile at least 0")

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"# {args.space} C={args.channels} layers={args.layers}, batch {args.batch}, {args.image_size}x"
          f"{args.image_size}, {args.threads} thread(s); median of {args.repeats}, interleaved")
    print(f"# before: {roofline.load_average()}")
    with search_at_last_epoch(args.space, "darts", channels=args.channels, layers=args.layers,
                              batch_size=args.batch, image_size=args.image_size) as search:
        iterate(search)
        problem, batch = search.problem, next(search.train_stream)
        weights = problem.weights
        with torch.no_grad():
            activated = problem.activated()
        loss = replay_randomness(lambda: problem.loss(batch, activated)[0])
        g = torch.Generator().manual_seed(1)
        v = [torch.randn(p.shape, generator=g) for p in weights]

        def two_products(method: str) -> None:
            hvp = make_hvp(method, loss, weights)
            hvp(hvp(v))

        arch = problem.arch
        arch_loss = replay_randomness(lambda: problem.loss(batch)[0])  # alpha -> activation -> loss

        def mixed_product(method: str) -> None:
            make_hvp(method, arch_loss, weights)(v, wrt=arch)

        calls = {"pass": lambda: gradients(loss(), weights), "fd": lambda: two_products("fd"),
                 "exact": lambda: two_products("exact"), "fd-mixed": lambda: mixed_product("fd"),
                 "exact-mixed": lambda: mixed_product("exact")}
        gflop = {}
        for name, call in calls.items():
            with count_work() as work:
                call()
            gflop[name] = work.flops / 1e9
        times: dict[str, list[float]] = {name: [] for name in calls}
        for round_ in range(args.repeats + 1):
            for name, call in calls.items():
                seconds = time_calls(call, 0, 1)
                if round_:  # the first round warms up
                    times[name] += seconds
        median = {name: statistics.median(t) for name, t in times.items()}
        for name, t in times.items():
            print(f"{name:11s} {median[name]:8.3f} s ({min(t):.3f}-{max(t):.3f})  "
                  f"x pass {median[name] / median['pass']:5.2f}  {gflop[name]:8.2f} GFLOP "
                  f"({gflop[name] / gflop['pass']:5.2f} x pass)")
        for pair in ("", "-mixed"):
            print(f"exact{pair} / fd{pair}: time {median['exact' + pair] / median['fd' + pair]:.2f}, "
                  f"FLOPs {gflop['exact' + pair] / gflop['fd' + pair]:.2f}")
        for name in ("fd", "exact") if args.profile else ():
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                calls[name]()
            events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
            total = sum(e.self_cpu_time_total for e in events) / 1e3
            print(f"# {name}: self time of the top {args.profile} ops ({total:.0f} ms in all)")
            for e in events[: args.profile]:
                print(f"#   {e.key:45s} {e.self_cpu_time_total / 1e3:9.1f} ms {e.count:6d} calls")
    print(f"# after: {roofline.load_average()}")


if __name__ == "__main__":
    main()
