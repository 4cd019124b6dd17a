"""Seconds per search iteration of the original codes against dnas at equal configuration.

    python bench/bench_vs_original.py --autodl ~/src/AutoDL-Projects --darts ~/src/darts
    python bench/bench_vs_original.py --autodl ~/src/AutoDL-Projects --configs nb201,nb201-tiny

``--autodl`` is a checkout of D-X-Y/AutoDL-Projects (NAS-Bench-201 DARTS-V1/V2), ``--darts`` one of
quark0/darts (the DARTS search space); nothing of theirs is part of this repository. Their code is
imported from the checkout as it is and their own step functions are timed:

* AutoDL: the network of ``xautodl.models.get_cell_based_tiny_net`` (``TinyNetworkDarts``, BN
  without running statistics, ``--track_running_stats 0``, like the dnas supernet), wrapped in
  ``DataParallel`` as their script does, the optimizer, scheduler and loss of their
  ``get_optim_scheduler`` with ``configs/nas-benchmark/algos/DARTS.config``, Adam for alpha as in
  their script, and one call of ``search_func`` from ``exps/NAS-Bench-201-algos/DARTS-V1.py`` (or
  ``-V2.py``, with its ``backward_step_unrolled``) on a one-batch loader per iteration.
* quark0/darts: ``cnn/model_search.Network`` and ``cnn/architect.Architect`` (``step``, first order
  or unrolled), then the weight step of ``train_search.train`` (zero_grad, forward, loss, backward,
  clip at 5, SGD step, loss read on the host). That loop body is written out here because
  ``train_search.py`` parses the command line and creates directories when imported; its data
  loading (``next(iter(valid_queue))`` per step) is not timed, as for AutoDL.
* dnas: the same method through its real loop (``SearchStep.iterate``, as bench_search.py), data
  stream and on-device augmentation included.

Shims, applied only inside the worker process of an original code (nothing else is changed):

* ``Tensor.cuda`` and ``Module.cuda`` return their object unchanged when PyTorch has no CUDA
  device: both codes call ``.cuda()`` unconditionally (targets, architecture parameters, the
  unrolled model), which fails on a CPU-only build.
* ``obtain_accuracy`` (AutoDL) reshapes a slice of a transposed tensor with ``.view(-1)``, which
  current PyTorch refuses (the result of ``eq`` keeps its input's strides); the shim computes the
  same precision@k with ``.reshape(-1)``.
* Modules the timed functions never use, imported at the top of AutoDL's scripts for their
  ``main()`` only (``xautodl.datasets`` and ``xautodl.procedures`` need torchvision,
  ``nas_201_api`` the benchmark file), are replaced by empty stand-ins when they cannot be
  imported; ``get_optim_scheduler`` is then loaded from ``xautodl/procedures/optimizers.py`` itself.

The deprecated ``add_(Number, Tensor)`` overloads both codes use still work (with a warning).

Protocol: random tensors (batch 64, 32x32x3 unless said), ``--warmup`` untimed iterations then
``--steps`` timed ones per process; every (configuration, side) in its own process, the two sides
interleaved (original, dnas, original, dnas, ...) ``--repeats`` times; the table gives the median
over processes of each process's median, the range of the process medians in parentheses, and the
median peak RSS, and the memory the iterations add to the process (peak RSS after the iterations
minus the peak before the first one, when imports, network and data are built: activations,
gradients, optimizer state; at the tiny configurations PyTorch's own ~0.3 GB dominate the total).
The roofline of bench/roofline.py is measured in the same run, and one extra iteration per process
is counted (dnas.diagnostics.flops) for GFLOP, GFLOP/s, % of the conv ceiling, the bytes the memory-bound ops
touch and % of the roof (FLOPs at the conv ceiling plus those bytes at the stream bandwidth). The
load average is printed before and after.

A dnas search keeps freed host memory for reuse (``dnas.runtime.allocator``: glibc then neither unmaps large
tensors nor trims its heap, so iterations stop page-faulting their activations in). The original
code runs with glibc's default unless ``--original-allocator retained``, which gives it the same
policy: the ratio with it is what the code alone gives.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import roofline
from _common import iterate, maxrss_mb, run_worker, search_at_last_epoch, time_calls


@dataclass(frozen=True)
class Config:
    label: str
    original: str  # "autodl" or "darts"
    algorithm: str  # AutoDL script name, or "first"/"second" order for quark0/darts
    space: str
    method: str  # the dnas preset
    channels: int
    layers: int  # NB201: cells per stage; DARTS: cells
    image_size: int = 32
    batch: int = 64
    threads: int = 2

    @property
    def original_name(self) -> str:
        return f"AutoDL {self.algorithm}" if self.original == "autodl" else "quark0/darts"


CONFIGS = {
    "nb201": Config("NB201 C=16 N=5, first order", "autodl", "DARTS-V1", "nb201", "darts", 16, 5),
    "nb201-2nd": Config("NB201, second order", "autodl", "DARTS-V2", "nb201", "darts-2nd", 16, 5),
    "darts": Config("DARTS space 8 cells C=16, first order", "darts", "first", "darts", "darts", 16, 8),
    "nb201-tiny": Config("NB201 C=8 N=1 16x16, first order, 1 thread", "autodl", "DARTS-V1", "nb201", "darts",
                         8, 1, image_size=16, threads=1),
    "darts-2nd": Config("DARTS space 8 cells C=16, second order", "darts", "second", "darts", "darts-2nd", 16, 8),
    "darts-tiny": Config("DARTS space 5 cells C=8 16x16, first order, 1 thread", "darts", "first", "darts", "darts",
                         8, 5, image_size=16, threads=1),
}
DEFAULT = "nb201,nb201-2nd,darts,nb201-tiny"  # the rows of the speed table in the docs


# ----- shims (worker processes of the original codes only) -----------------------------------------
def _shim_cuda() -> None:
    import torch

    if not torch.cuda.is_available():
        torch.Tensor.cuda = lambda self, *args, **kwargs: self
        torch.nn.Module.cuda = lambda self, *args, **kwargs: self


def _load_file(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _stand_in(name: str, **attributes: Any) -> None:
    """Insert an empty module ``name`` whose listed attributes are either given or refuse to run."""

    def unavailable(*args, **kwargs):
        raise RuntimeError(f"{name} is a stand-in: the benchmark does not use it")

    module = types.ModuleType(name)
    for attribute, value in attributes.items():
        setattr(module, attribute, value if value is not None else unavailable)
    sys.modules[name] = module


def _accuracy(output, target, topk=(1,)):
    """AutoDL's ``obtain_accuracy`` with ``reshape`` for ``view`` (see the shims above)."""
    pred = output.topk(max(topk), 1, True, True)[1].t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    return [correct[:k].reshape(-1).float().sum(0, keepdim=True).mul_(100.0 / target.size(0)) for k in topk]


# ----- one timed process ---------------------------------------------------------------------------
def _autodl_step(config: Config, root: Path, batch: tuple) -> tuple[Callable[[], None], Any]:
    import torch

    sys.path.insert(0, str(root))
    optimizers = _load_file("autodl_optimizers", root / "xautodl" / "procedures" / "optimizers.py")
    for name, attributes in {
        "xautodl.datasets": {"get_datasets": None, "get_nas_search_loaders": None},
        "xautodl.procedures": {"prepare_seed": None, "prepare_logger": None, "save_checkpoint": None,
                               "copy_checkpoint": None, "get_optim_scheduler": optimizers.get_optim_scheduler},
        "nas_201_api": {"NASBench201API": None},
    }.items():
        try:
            importlib.import_module(name)
        except ImportError:
            _stand_in(name, **attributes)
    script = _load_file("autodl_search", root / "exps" / "NAS-Bench-201-algos" / f"{config.algorithm}.py")
    script.obtain_accuracy = _accuracy
    from xautodl.config_utils import dict2config, load_config
    from xautodl.models import get_cell_based_tiny_net, get_search_spaces

    space = get_search_spaces("cell", "nas-bench-201")
    model = get_cell_based_tiny_net(dict2config(
        {"name": config.algorithm, "C": config.channels, "N": config.layers, "max_nodes": 4, "num_classes": 10,
         "space": space, "affine": False, "track_running_stats": False}, None))
    algo = load_config(root / "configs" / "nas-benchmark" / "algos" / "DARTS.config",
                       {"class_num": 10, "xshape": (1, 3, config.image_size, config.image_size)}, None)
    w_optimizer, scheduler, criterion = optimizers.get_optim_scheduler(model.get_weights(), algo)
    a_optimizer = torch.optim.Adam(model.get_alphas(), lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    network = torch.nn.DataParallel(model)
    logger = types.SimpleNamespace(log=lambda message: None)
    extra = (5.0,) if config.algorithm == "DARTS-V1" else ()  # V1 takes the gradient clip as an argument

    def step() -> None:
        script.search_func([batch], network, criterion, scheduler, w_optimizer, a_optimizer, "000/050", 200,
                           logger, *extra)

    return step, model


def _darts_step(config: Config, root: Path, batch: tuple) -> tuple[Callable[[], None], Any]:
    import torch

    sys.path.insert(0, str(root / "cnn"))
    from architect import Architect
    from model_search import Network

    criterion = torch.nn.CrossEntropyLoss()
    model = Network(config.channels, 10, config.layers, criterion)
    optimizer = torch.optim.SGD(model.parameters(), 0.025, momentum=0.9, weight_decay=3e-4)
    architect = Architect(model, types.SimpleNamespace(momentum=0.9, weight_decay=3e-4, arch_learning_rate=3e-4,
                                                       arch_weight_decay=1e-3))
    x, y, x_search, y_search = batch

    def step() -> None:  # the loop body of train_search.train
        model.train()
        architect.step(x, y, x_search, y_search, 0.025, optimizer, unrolled=config.algorithm == "second")
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5)
        optimizer.step()
        loss.item()

    return step, model


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    config = CONFIGS[spec["config"]]
    torch.set_num_threads(config.threads)
    torch.manual_seed(0)
    warmup, steps = spec["warmup"], spec["steps"]
    if spec["side"] == "dnas":
        with search_at_last_epoch(config.space, config.method, channels=config.channels, layers=config.layers,
                                  batch_size=config.batch, image_size=config.image_size) as search:
            return _measure(lambda: iterate(search), search.problem.net, warmup, steps)
    if spec.get("original_allocator") == "retained":
        from dnas.runtime.allocator import retain_freed_memory

        retain_freed_memory()
    _shim_cuda()
    g = torch.Generator().manual_seed(0)
    size = (config.batch, 3, config.image_size, config.image_size)
    batch = (torch.randn(size, generator=g), torch.randint(0, 10, (config.batch,), generator=g),
             torch.randn(size, generator=g), torch.randint(0, 10, (config.batch,), generator=g))
    build = _autodl_step if config.original == "autodl" else _darts_step
    step, model = build(config, Path(spec["root"]), batch)
    return _measure(step, model, warmup, steps)


def _measure(step: Callable[[], object], net: Any, warmup: int, steps: int) -> dict[str, Any]:
    from dnas.diagnostics.flops import count_work
    from dnas.runtime.allocator import allocator_state

    before = maxrss_mb()  # the process with its imports, network and data built, before any iteration
    times = time_calls(step, warmup, steps)
    peak = maxrss_mb()
    with count_work(net) as work:  # one more iteration, counted (never timed)
        step()
    return {"seconds": statistics.median(times), "times": times, "peak_mb": peak, "added_mb": peak - before,
            "allocator": allocator_state(),
            "flops": work.flops,
            "flops_by_key": [[*key, flops] for key, flops in work.flops_by_key.items()],
            "bytes_by_size": [[size, n] for size, n in work.bytes_by_size.items()]}


# ----- the run -------------------------------------------------------------------------------------
def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    medians = [r["seconds"] for r in runs]
    return {"seconds": statistics.median(medians), "low": min(medians), "high": max(medians),
            "peak_mb": statistics.median(r["peak_mb"] for r in runs),
            "added_mb": statistics.median(r["added_mb"] for r in runs), "flops": runs[0]["flops"],
            "flops_by_key": runs[0]["flops_by_key"], "bytes_by_size": runs[0]["bytes_by_size"],
            "allocator": "/".join(sorted({r["allocator"] for r in runs})), "runs": runs}


def _checkout(path: Path | None, marker: str, option: str) -> Path:
    if path is None:
        raise SystemExit(f"{option} DIR is required for the configurations asked for (a checkout of the original code)")
    if not (path / marker).is_file():
        raise SystemExit(f"{option} {path} is not a checkout of the original code: {marker} is missing")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--autodl", type=Path, help="checkout of D-X-Y/AutoDL-Projects")
    parser.add_argument("--darts", type=Path, help="checkout of quark0/darts")
    parser.add_argument("--configs", default=DEFAULT, help=f"comma-separated, of {', '.join(CONFIGS)}")
    parser.add_argument("--repeats", type=int, default=3, help="processes per side and configuration")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5, help="timed iterations per process")
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    parser.add_argument("--original-allocator", choices=("default", "retained"), default="default",
                        help="'retained': the original code's process also keeps freed host memory for reuse, "
                             "as dnas searches do (dnas.runtime.allocator), to separate that policy from the code")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        raise SystemExit(f"unknown configuration(s) {', '.join(unknown)}; choose from {', '.join(CONFIGS)}")
    if args.repeats < 1 or args.steps < 1 or args.warmup < 0:
        raise SystemExit("--repeats and --steps must be at least 1 and --warmup at least 0")
    roots = {}
    for name in names:
        kind = CONFIGS[name].original
        if kind == "autodl":
            roots[kind] = _checkout(args.autodl, "exps/NAS-Bench-201-algos/DARTS-V1.py", "--autodl")
        else:
            roots[kind] = _checkout(args.darts, "cnn/model_search.py", "--darts")

    print(f"# original code vs dnas, one iteration (architecture step + weight step): median of {args.steps} timed "
          f"iterations after {args.warmup} warm-up per process, {args.repeats} processes per side, interleaved; "
          "random tensors")
    print(f"# before: {roofline.load_average()}")
    rooflines, results = {}, {}
    for name in names:
        config = CONFIGS[name]
        key = (config.channels, config.image_size, config.batch, config.threads)
        if key not in rooflines:
            rooflines[key] = roofline.measure(*key)
            print(roofline.format_table(rooflines[key]))
        runs: dict[str, list] = {"original": [], "dnas": []}
        for _ in range(args.repeats):
            for side in runs:
                spec = {"config": name, "side": side, "root": str(roots[config.original]), "warmup": args.warmup,
                        "steps": args.steps, "original_allocator": args.original_allocator}
                try:
                    runs[side].append(run_worker(__file__, spec))
                except RuntimeError as error:
                    raise SystemExit(f"{config.label}: the {side} worker failed: {error}") from None
        results[name] = {side: _summary(r) for side, r in runs.items()}
        print(f"# {config.label}: done; host allocator (dnas.runtime.allocator), original / dnas: "
              f"{results[name]['original']['allocator']} / {results[name]['dnas']['allocator']}", flush=True)

    print("\n| configuration | original code | dnas | ratio | peak RSS original / dnas | added by the iterations "
          "original / dnas |")
    print("|---|---|---|---|---|---|")
    for name in names:
        config, r = CONFIGS[name], results[name]
        o, d = r["original"], r["dnas"]
        print(f"| {config.label} | {config.original_name} {o['seconds']:.3f} s ({o['low']:.3f}-{o['high']:.3f}) "
              f"| {d['seconds']:.3f} s ({d['low']:.3f}-{d['high']:.3f}) | {o['seconds'] / d['seconds']:.2f}x "
              f"| {o['peak_mb'] / 1024:.2f} / {d['peak_mb'] / 1024:.2f} GB "
              f"| {o['added_mb'] / 1024:.2f} / {d['added_mb'] / 1024:.2f} GB ({d['added_mb'] / o['added_mb']:.2f}x) |")
    print("\n| configuration | GFLOP/iter original / dnas | GFLOP/s original / dnas "
          "| % of conv ceiling original / dnas | % of gemm ceiling original / dnas "
          "| GB of memory-bound ops original / dnas | % of roof original / dnas |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        config, r = CONFIGS[name], results[name]
        ceiling = rooflines[(config.channels, config.image_size, config.batch, config.threads)]
        cells = {side: (s["flops"] / 1e9, s["flops"] / s["seconds"] / 1e9,
                        roofline.percent_of_ceilings(s["flops_by_key"], s["seconds"], ceiling, s["bytes_by_size"]),
                        sum(n for _, n in s["bytes_by_size"]) / 1e9)
                 for side, s in r.items()}
        o, d = cells["original"], cells["dnas"]
        print(f"| {config.label} | {o[0]:.1f} / {d[0]:.1f} | {o[1]:.1f} / {d[1]:.1f} | {o[2]['conv']:.1f} / "
              f"{d[2]['conv']:.1f} | {o[2]['gemm']:.1f} / {d[2]['gemm']:.1f} | {o[3]:.1f} / {d[3]:.1f} "
              f"| {o[2]['roof']:.1f} / {d[2]['roof']:.1f} |")
    print(f"# after: {roofline.load_average()}")
    if args.json:
        args.json.write_text(json.dumps({"configs": {n: CONFIGS[n].__dict__ for n in names}, "results": results,
                                         "rooflines": [{"key": list(k), **v} for k, v in rooflines.items()]},
                                        indent=2) + "\n")


if __name__ == "__main__":
    main()
