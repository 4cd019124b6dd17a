"""Speed regression check on quantities that do not depend on the machine's load.

Timing a search in CI is too noisy to gate on, so these tests pin what the time is made of, on a
tiny supernet, per method and per iteration of the real search algorithm (``SearchStep.iterate``, as in
``bench/bench_search.py``):

* the number of forward and backward passes through the supernet,
* the FLOPs of convolutions and matrix products, counted from the network as it runs
  (:mod:`dnas.diagnostics.flops`), against closed forms and against sums of single reference passes,
* the peak memory allocated by the iteration, against the peak of one pass plus the
  weight-sized vectors the method is expected to keep.

Every expected value is derived in a comment, so a change that adds a pass, a weight gradient no
one needs, or a graph kept alive too long fails here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from dnas.diagnostics.flops import Work, count_work
from dnas.spaces import get_space
from dnas.supernet import build_supernet

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from _common import FD, PASS_KINDS, PASSES, iterate, reference_pass, search_at_last_epoch  # noqa: E402

SHAPE = {"channels": 4, "layers": 1, "batch_size": 8, "image_size": 8}
# the Fisher schedule's threshold out of reach: an architecture step in every iteration, so every
# iteration's passes include the architecture step's
EVERY_ITERATION = {"darts-prime": ["schedule.threshold=1e9"], "darts-prime-v1": ["schedule.threshold=1e9"]}

def counted(fn, net) -> Work:
    with count_work(net) as work:
        fn()
    return work


def peak_bytes(fn) -> int:
    """Peak of the bytes allocated while ``fn`` runs, above what was allocated when it started.

    From the profiler's allocation and release events, in order: deterministic for a given
    PyTorch build and thread count, whatever the load."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    live = peak = 0
    for event in events:
        live += event.nbytes()
        peak = max(peak, live)
    return peak


# ----- the counter itself --------------------------------------------------------------------------
def test_forward_flops_of_the_nb201_supernet_match_the_closed_form():
    b, s, c, k = 8, 8, 4, 10
    net = build_supernet(get_space("nb201"), num_classes=k, channels=c, layers=1)
    weights = net.per_cell({"cell": torch.full((6, 5), 0.2)})
    x = torch.randn(b, 3, s, s)
    with torch.no_grad():
        net(x, weights)  # the first call caches the average-pooling counts (one small convolution)
        work = counted(lambda: net(x, weights), net)

    def cell(c: int, s: int) -> int:
        convs = 2 * b * s * s * 6 * c * c * (1 + 9)  # nor_conv_1x1 and nor_conv_3x3 on 6 edges
        pools = 2 * b * s * s * c * 9 * 3  # avg_pool_3x3 as a depthwise ones-convolution, once per source node
        # mixing per source node with E_src = 3, 2, 1 outgoing edges: the convolutions' weights are their
        # BatchNorms' affine weights (no FLOPs); the shared identity and pooling are one outer product each,
        # a (E x 1) @ (1 x BCHW) matrix product: 2 E (B C H W) per shared kind
        mixing = sum(2 * 2 * e * b * c * s * s for e in (3, 2, 1))
        return convs + pools + mixing

    def block(c_in: int, c_out: int, s_out: int) -> int:  # ResNet block: 3x3 stride 2, 3x3, avg-pool + 1x1 shortcut
        return 2 * b * s_out * s_out * c_out * (9 * c_in + 9 * c_out + c_in)

    expected = (2 * b * s * s * c * 3 * 9  # stem 3x3, 3 -> C
                + cell(c, s) + block(c, 2 * c, s // 2) + cell(2 * c, s // 2)
                + block(2 * c, 4 * c, s // 4) + cell(4 * c, s // 4)
                + 2 * b * 4 * c * k)  # classifier
    assert work.flops == expected
    assert (work.forwards, work.backwards) == (1, 0)


def test_backward_flops_count_only_the_gradients_autograd_computes():
    net = build_supernet(get_space("nb201"), num_classes=10, channels=4, layers=1)
    alpha = torch.zeros(6, 5, requires_grad=True)
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 10, (8,))
    net(x, net.per_cell({"cell": alpha.softmax(-1).detach()}))

    def loss() -> torch.Tensor:
        return F.cross_entropy(net(x, net.per_cell({"cell": alpha.softmax(-1)})), y)

    forward = counted(loss, net)
    weight_pass = counted(lambda: torch.autograd.grad(loss(), list(net.parameters())), net)
    arch_pass = counted(lambda: torch.autograd.grad(loss(), [alpha]), net)
    fwd = forward.by("kind")
    stem = 2 * 8 * 8 * 8 * 4 * 3 * 9
    # weight gradients: every convolution weight is a parameter except the ones-kernel of the pooling
    # (a buffer), so grad_weight FLOPs = forward FLOPs of the dense convolutions; input gradients: every
    # dense convolution except the stem (the images need no gradient); the pooling's input gradient is its
    # box sum transposed, a (transposed) depthwise convolution of the same FLOPs run in the backward
    assert weight_pass.by("phase")["grad_weight"] == fwd["dense"]
    assert weight_pass.by("phase")["grad_input"] == fwd["dense"] - stem
    assert weight_pass.by("phase")["forward"] == forward.by("phase")["forward"] + fwd["depthwise"]
    # the architecture pass computes no weight gradient at all
    assert "grad_weight" not in arch_pass.by("phase")
    assert 0 < arch_pass.by("phase")["grad_input"] < weight_pass.by("phase")["grad_input"]
    assert (weight_pass.forwards, weight_pass.backwards) == (1, 1)


def test_grouped_convolution_weight_gradient_is_not_counted_as_dense():
    x = torch.randn(2, 6, 5, 5, requires_grad=True)
    w = torch.randn(6, 1, 3, 3, requires_grad=True)  # depthwise: 6 groups of one channel
    work = counted(lambda: F.conv2d(x, w, padding=1, groups=6).sum().backward(), None)
    per_pass = 2 * 2 * 5 * 5 * 6 * 1 * 9
    assert work.flops_by_key == {("depthwise", "forward", 50): per_pass, ("depthwise", "grad_input", 50): per_pass,
                                 ("depthwise", "grad_weight", 50): per_pass}


# ----- per method: passes, FLOPs, peak memory of one iteration ----------------------------------
# Weight-sized vectors an iteration may hold next to one pass's activations (upper bound):
#   first order: the gradients of the pass (1); lambda: G(-) while G(+) is computed, the increments (2);
#   second order: the step grad_w L_train, the copy that restores w, then v = grad_w' L_val (3);
#   amended: v, u = H v, the copy restoring w and one side's gradient inside the difference (4)
WEIGHT_VECTORS = {"darts": 1, "darts-prime": 1, "darts-prime-v1": 1, "lambda-darts": 2, "darts-2nd": 3,
                  "amended-darts": 4}


def _iteration_work(search) -> tuple[Work, Work, bool]:
    """(work of the architecture step, work of the whole iteration, whether an alpha step was taken)."""
    estimator = search.estimator
    arch_step = [Work()]
    original = estimator.arch_gradient

    def recorded(*args):
        before = work.copy()
        try:
            return original(*args)
        finally:
            arch_step[0] = work - before

    estimator.arch_gradient = recorded
    try:
        with count_work(search.problem.net) as work:
            took = iterate(search)
    finally:
        del estimator.arch_gradient
    return arch_step[0], work, took


def _sum(works: list[Work]) -> Work:
    return sum(works, Work())


SHAPES = {"nb201": {**SHAPE}, "darts": {**SHAPE, "layers": 4}}  # DARTS: normal cells 0 and 3, reductions 1 and 2
CASES = [("nb201", m) for m in PASSES] + [("darts", m) for m in ("darts", "darts-2nd", "lambda-darts")]


@pytest.mark.parametrize(("space", "method"), CASES)
def test_passes_and_flops_of_one_iteration(space, method):
    overrides = [*FD.get(method, []), *EVERY_ITERATION.get(method, [])]
    with search_at_last_epoch(space, method, **SHAPES[space], overrides=overrides) as search:
        iterate(search)  # first calls fill caches (pooling counts) and optimizer states
        problem, batch = search.problem, next(search.train_stream)
        reference = {kind: counted(lambda k=kind: reference_pass(problem, batch, k), problem.net)
                     for kind in PASS_KINDS}
        assert all((r.forwards, r.backwards) == (1, 1) for r in reference.values())
        arch_passes, weight_passes = PASSES[method]
        taken, iterations = 0, 2
        for _ in range(iterations):
            arch_step, total, took = _iteration_work(search)
            taken += took
            expected_arch = _sum([reference[k] for k in arch_passes]) if took else Work()
            expected_weight = _sum([reference[k] for k in weight_passes])
            if method == "lambda-darts":  # R = mean cosine of the per-cell gradients: a Gram matrix of L cells x D
                for cell_type in search.weight_regularizers[0].regularized_types(problem.net):
                    cells, size = len(problem.net.cells_of_type(cell_type)), problem.alphas[cell_type].numel()
                    expected_weight.flops_by_key["matmul", "any", 0] += 2 * cells * size * cells
            expected = _sum([expected_arch, expected_weight])
            assert (arch_step.forwards, arch_step.backwards) == (expected_arch.forwards, expected_arch.backwards)
            assert (total.forwards, total.backwards) == (expected.forwards, expected.backwards)
            assert arch_step.flops == expected_arch.flops
            assert total.flops == expected.flops
        assert taken == iterations


@pytest.mark.parametrize("method", ["pr-darts", "pr-darts-code"])
def test_gated_methods_run_two_passes_on_fewer_flops(method):
    with search_at_last_epoch("nb201", "darts", **SHAPE) as search:
        iterate(search)
        darts = _iteration_work(search)[1].flops
    with search_at_last_epoch("nb201", method, **SHAPE) as search:
        iterate(search)
        for _ in range(3):
            arch_step, total, took = _iteration_work(search)
            assert took and (arch_step.forwards, arch_step.backwards) == (1, 1)
            assert (total.forwards, total.backwards) == (2, 2)
            # two ops per edge at most (top-2 gates) instead of the four computed ones of darts
            assert total.flops < 0.8 * darts


@pytest.mark.parametrize("method", list(WEIGHT_VECTORS))
def test_peak_memory_of_one_iteration(method):
    with search_at_last_epoch("nb201", method, **SHAPE, overrides=FD.get(method, [])) as search:
        iterate(search)
        problem, batch = search.problem, next(search.train_stream)
        kinds = {*PASSES[method][0], *PASSES[method][1]}
        passes = {kind: peak_bytes(lambda k=kind: reference_pass(problem, batch, k)) for kind in kinds}
        weight_bytes = sum(p.numel() * p.element_size() for p in problem.weights)
        peak = max(peak_bytes(lambda: iterate(search)) for _ in range(2))
    # one pass's graph at a time (never two), plus the weight-sized vectors listed above, 10% slack; at least
    # the weight step's pass, which every iteration runs
    assert peak <= 1.1 * (max(passes.values()) + WEIGHT_VECTORS[method] * weight_bytes)
    assert peak >= 0.9 * passes["w"]


# ----- the roofline arithmetic and the comparison script's user errors -----------------------------
def test_attainable_time_charges_every_op_at_the_ceiling_of_its_stage():
    import roofline

    table = {"stages": [{"positions": 4096, "ceilings": {"conv": 10e9, "gemm": 40e9}},
                        {"positions": 1024, "ceilings": {"conv": 20e9, "gemm": 40e9}}]}
    work = [("dense", "forward", 4096, 10e9),  # 1 s at stage 0's 10 GFLOP/s
            ("depthwise", "grad_input", 900, 20e9),  # nearest stage 1: 1 s
            ("matmul", "any", 0, 20e9)]  # matrix products at the best conv rate of all stages: 1 s
    assert roofline.attainable_seconds(work, table, "conv") == pytest.approx(3.0)
    assert roofline.percent_of_ceilings(work, 6.0, table)["conv"] == pytest.approx(50.0)
    # the roof adds the memory-bound bytes at the bandwidth of the stage nearest in tensor size
    table["stream"] = [{"elements": 1000, "bandwidth": 1e9}, {"elements": 100, "bandwidth": 4e9}]
    memory = [(2000, 1e9), (90, 4e9)]  # 1 s at 1 GB/s (nearest size 1000), 1 s at 4 GB/s (nearest size 100)
    assert roofline.memory_seconds(memory, table) == pytest.approx(2.0)
    assert roofline.percent_of_ceilings(work, 10.0, table, memory)["roof"] == pytest.approx(50.0)


def test_memory_bound_ops_count_the_bytes_they_read_and_write():
    x, w = torch.randn(4, 8, 5, 5), torch.randn(8, 8, 3, 3)
    n = x.numel() * 4
    with count_work() as work:
        y = F.relu(x)  # reads x, writes y
        y.view(-1)  # a view moves nothing
        y.add_(1.0)  # reads and writes y
        torch.empty(10)  # an allocation moves nothing
        F.conv2d(x, w, padding=1)  # counted as FLOPs, not bytes
    assert work.bytes == 4 * n and dict(work.bytes_by_size) == {x.numel(): 4 * n}
    assert (work - Work()).bytes == work.bytes and work.copy().bytes_by_size == work.bytes_by_size


def test_comparison_with_the_original_code_needs_its_checkout(tmp_path):
    import subprocess

    script = Path(__file__).resolve().parents[1] / "bench" / "bench_vs_original.py"
    for args, word in ((["--configs", "nb201"], "--autodl"), (["--configs", "darts", "--darts", str(tmp_path)],
                                                                 "model_search.py")):
        proc = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True)
        assert proc.returncode != 0
        assert proc.stderr.strip().count("\n") == 0 and word in proc.stderr and "Traceback" not in proc.stderr


def test_drives_the_original_code_from_checkouts_given_in_the_environment():
    """Runs only where DNAS_AUTODL_DIR and DNAS_DARTS_DIR name checkouts of AutoDL-Projects and quark0/darts."""
    import os
    import subprocess

    autodl, darts = os.environ.get("DNAS_AUTODL_DIR"), os.environ.get("DNAS_DARTS_DIR")
    if not (autodl and darts):
        pytest.skip("set DNAS_AUTODL_DIR and DNAS_DARTS_DIR to checkouts of the original code to run this test")
    script = Path(__file__).resolve().parents[1] / "bench" / "bench_vs_original.py"
    proc = subprocess.run([sys.executable, str(script), "--autodl", autodl, "--darts", darts, "--configs",
                           "nb201-tiny,darts-tiny", "--repeats", "1", "--warmup", "0", "--steps", "1"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    rows = [line for line in lines if line.startswith("| NB201 C=8") or line.startswith("| DARTS")]
    assert len(rows) == 4 and "AutoDL DARTS-V1" in rows[0] and "quark0/darts" in rows[1]
    assert all(row.count("|") == 7 and "x) |" in row for row in rows[:2])  # memory added by the iterations, ratio
    assert sum("host allocator (dnas.runtime.allocator), original / dnas: " in line for line in lines) == 2


def test_hvp_benchmark_runs_and_compares_the_two_products():
    import re
    import subprocess

    script = Path(__file__).resolve().parents[1] / "bench" / "bench_hvp.py"
    proc = subprocess.run([sys.executable, str(script), "--channels", "4", "--layers", "1", "--batch", "8",
                           "--image-size", "8", "--threads", "1", "--repeats", "1", "--profile", "3"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    rows = [line.split()[0] for line in lines if re.match(r"(pass|fd|exact) +\d", line)]
    assert rows == ["pass", "fd", "exact"]
    assert any(line.startswith("exact / fd: ") for line in lines)
    assert sum(line.startswith("#   ") for line in lines) == 6  # three ops of each profiled product
