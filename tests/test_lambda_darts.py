"""Lambda-DARTS weight regularizer: alignment measures, their directions, the finite-difference
gradient against double backward, its effect on the alignment, the ramp, and end-to-end searches."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from dnas.bilevel.problem import BilevelProblem, StepContext
from dnas.bilevel.run import Search
from dnas.cli import main
from dnas.components import WEIGHT_REGULARIZERS
from dnas.components.activations import Softmax
from dnas.components.lambda_darts import (
    LambdaRegularizer,
    alignment,
    alignment_direction,
    sign_alignment,
)
from dnas.config.resolve import resolve_config
from dnas.diagnostics.alignment import gradient_alignment
from dnas.errors import DnasError
from dnas.runtime.files import read_metrics
from dnas.spaces import get_space
from dnas.supernet import build_supernet

# ----------------------------------------------------------------------------------------- helpers


def _problem(space: str = "nb201", layers: int = 1, seed: int = 0) -> BilevelProblem:
    """A tiny float64 supernet (C=2, 8x8 grey inputs, 3 classes) with non-uniform alphas."""
    torch.manual_seed(seed)
    sp = get_space(space)
    net = build_supernet(sp, num_classes=3, in_channels=1, channels=2, layers=layers).double()
    alphas = nn.ParameterDict({
        t: nn.Parameter(0.5 * torch.randn(shape, dtype=torch.float64)) for t, shape in sp.alpha_shapes().items()
    })
    return BilevelProblem(net, alphas, Softmax())


def _batch(n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 1, 8, 8, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


def _weight_backward(problem: BilevelProblem, batch) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The search loop's weight backward: per-cell leaf copies of A, ``w.grad = grad_w L``, ``g_l``."""
    for p in problem.weights:
        p.grad = None
    with torch.no_grad():
        activated = problem.activated()
    cell_weights = [w.clone().requires_grad_(True) for w in problem.net.per_cell(activated)]
    loss, _ = problem.loss(batch, activated, cell_weights)
    loss.backward()
    return cell_weights, [w.grad for w in cell_weights]


def _regularizer_increment(problem, batch, reg, epoch=1, epochs=2, rng_at_forward=False) -> torch.Tensor:
    """What ``reg.add_gradient`` adds to ``w.grad``, flattened. ``rng_at_forward``: the extra passes start
    from the RNG state of the weight forward (same noise as the pass that produced ``g_l``)."""
    state = torch.get_rng_state()
    cell_weights, cell_grads = _weight_backward(problem, batch)
    before = [p.grad.clone() for p in problem.weights]
    if rng_at_forward:
        torch.set_rng_state(state)
    reg.add_gradient(problem, batch, cell_weights, cell_grads, StepContext(epoch=epoch, epochs=epochs))
    return torch.cat([(p.grad - b).flatten() for p, b in zip(problem.weights, before, strict=True)])


def _records(path, kind="step"):
    return read_metrics(path, kind)


# ------------------------------------------------------------------------------ measures, directions


def _pairwise(g: torch.Tensor, measure: str) -> float:
    """Brute-force mean over pairs i<j of the pair alignment."""
    values = []
    for i, j in itertools.combinations(range(len(g)), 2):
        den = g[i].norm() * g[j].norm() if measure == "corr" else g[i].abs() @ g[j].abs()
        values.append(float(g[i] @ g[j] / den))
    return sum(values) / len(values)


@pytest.mark.parametrize("measure", ["corr", "signcorr"])
def test_measures_match_their_pairwise_definition(measure):
    g = torch.randn(5, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert float(alignment(g, measure)) == pytest.approx(_pairwise(g, measure), rel=1e-12)
    assert float(alignment(g[:1], measure)) == 1.0
    same_signs = g.abs() * torch.rand(5, 12, dtype=torch.float64) + 0.1
    assert float(sign_alignment(same_signs)) == pytest.approx(1.0)  # every sign agrees
    assert float(alignment(g, "corr")) == float(gradient_alignment(list(g)))


@pytest.mark.parametrize("measure", ["corr", "signcorr"])
def test_directions_are_the_autograd_gradient_of_the_measure(measure):
    g = torch.randn(4, 15, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    g[:, :3] = 0.0  # never-computed ops (the `none` column) have zero gradient in every cell
    leaf = g.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(alignment(leaf, measure), leaf)
    p = alignment_direction(g, measure)
    torch.testing.assert_close(p, expected, rtol=1e-10, atol=1e-12)
    assert p[:, :3].abs().max() == 0  # so perturbations never touch inactive ops
    assert alignment_direction(g[:1], measure).abs().max() == 0


def test_a_cell_with_zero_gradient_gets_no_direction():
    g = torch.randn(4, 15, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    g[1] = 0.0  # e.g. a cell whose ops all have gate 0
    leaf = g.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(alignment(leaf, "corr"), leaf)
    p = alignment_direction(g, "corr")
    assert p[1].abs().max() == 0 and torch.isfinite(p).all()
    torch.testing.assert_close(p[[0, 2, 3]], expected[[0, 2, 3]], rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------ finite difference vs exact


@pytest.mark.parametrize("space,layers,cells,measure", [
    ("nb201", 1, "auto", "corr"),        # 3 cells of one type
    ("nb201", 1, "auto", "signcorr"),
    ("darts", 5, "all", "corr"),         # 3 normal + 2 reduction cells, R summed over both types
    ("s4", 4, "auto", "corr"),           # the noise op: the extra passes must replay the same noise
])
def test_finite_difference_matches_double_backward(space, layers, cells, measure):
    increments = {}
    for exact in (False, True):
        problem, batch = _problem(space, layers), _batch()
        torch.manual_seed(5)
        reg = LambdaRegularizer(lam=0.7, eps0=1e-6, measure=measure, cells=cells, exact=exact)
        increments[exact] = _regularizer_increment(problem, batch, reg, rng_at_forward=True)
    fd, exact = increments[False], increments[True]
    assert exact.norm() > 1e-3
    assert float((fd - exact).norm() / exact.norm()) < 1e-6


def test_regularized_cells_follow_the_setting():
    darts = _problem("darts", 5).net  # normal: 0, 2, 4; reduce: 1, 3
    assert LambdaRegularizer().regularized_types(darts) == ["normal"]
    assert LambdaRegularizer(cells="all").regularized_types(darts) == ["normal", "reduce"]
    assert LambdaRegularizer(cells="reduce").regularized_types(darts) == ["reduce"]
    assert LambdaRegularizer(cells="auto").regularized_types(_problem("nb201").net) == ["cell"]
    with pytest.raises(DnasError, match="unknown cell type"):
        LambdaRegularizer(cells="cell").regularized_types(darts)
    with pytest.raises(DnasError, match="two or more cells"):  # layers=3: one normal cell
        LambdaRegularizer().regularized_types(_problem("darts", 3).net)
    with pytest.raises(DnasError, match="measure"):
        LambdaRegularizer(measure="cosine")


def test_only_regularized_cells_are_perturbed():
    """With cells=normal, the reduction cells' weights in the extra passes are the step's own."""
    problem, batch = _problem("darts", 5), _batch()
    seen = []
    original = problem.loss

    def recording_loss(batch, activated=None, cell_weights=None):
        seen.append([w.detach().clone() for w in cell_weights])
        return original(batch, activated, cell_weights)

    cell_weights, cell_grads = _weight_backward(problem, batch)
    problem.loss = recording_loss
    LambdaRegularizer(lam=1.0, eps0=1e-3).add_gradient(problem, batch, cell_weights, cell_grads,
                                                       StepContext(epoch=1, epochs=2))
    assert len(seen) == 2
    minus, plus = seen
    for i, t in enumerate(problem.net.cell_types):
        base = cell_weights[i].detach()
        if t == "reduce":
            assert torch.equal(minus[i], base) and torch.equal(plus[i], base)
        else:
            torch.testing.assert_close(base - minus[i], plus[i] - base)
            assert (plus[i] - base).abs().max() > 0
    shift = torch.cat([(plus[i] - cell_weights[i].detach()).flatten() for i in problem.net.cells_of_type("normal")])
    assert float(shift.norm()) == pytest.approx(1e-3, rel=1e-9)  # the perturbation has norm eps0


# --------------------------------------------------------------------------- effect and side effects


def _alignment_after_one_step(space: str, layers: int, measure: str, sign: float) -> float:
    """R on a fixed batch after one plain SGD step (lr 1e-4) on ``grad_w L + sign * (regularizer term)``,
    lambda = 1 (``sign=-1`` minimises R instead)."""
    problem, batch = _problem(space, layers), _batch()
    reg = LambdaRegularizer(lam=1.0, eps0=1e-4, measure=measure)
    cell_weights, cell_grads = _weight_backward(problem, batch)
    loss_grads = [p.grad.clone() for p in problem.weights]
    if sign:
        reg.add_gradient(problem, batch, cell_weights, cell_grads, StepContext(epoch=1, epochs=2))
    with torch.no_grad():
        for p, g in zip(problem.weights, loss_grads, strict=True):
            p -= 1e-4 * (g + sign * (p.grad - g))
    cell_weights, cell_grads = _weight_backward(problem, batch)
    # lambda_t = 0: only measures R
    reg.add_gradient(problem, batch, cell_weights, cell_grads, StepContext(epoch=0, epochs=2))
    (value,) = [v for k, v in reg.metrics().items() if k.startswith("R.")]
    return float(value)


@pytest.mark.parametrize("space,layers", [("nb201", 1), ("darts", 4)])
@pytest.mark.parametrize("measure", ["corr", "signcorr"])
def test_a_regularized_weight_step_increases_the_alignment(space, layers, measure):
    """Same init and batch: the regularized step ends with a larger R than the plain step (and the
    step with the regularizer's sign reversed with a smaller one). R of these tiny nets is very
    sensitive to w, hence the small learning rate, which keeps the step in the linear regime where
    the change is about ``lr * (lambda ||grad_w R||^2 - <grad_w R, grad_w L>)``."""
    plain = _alignment_after_one_step(space, layers, measure, 0.0)
    assert _alignment_after_one_step(space, layers, measure, 1.0) > plain + 0.005
    assert _alignment_after_one_step(space, layers, measure, -1.0) < plain - 0.005


def test_extra_passes_leave_batchnorm_statistics_and_rng_untouched():
    problem, batch = _problem("s4", 4), _batch()  # stem/preprocess BNs track statistics; noise draws
    cell_weights, cell_grads = _weight_backward(problem, batch)
    buffers = [b.clone() for b in problem.net.buffers()]
    assert any(b.dtype == torch.float64 and b.abs().sum() > 0 for b in buffers)
    rng = torch.get_rng_state()
    for exact in (False, True):
        LambdaRegularizer(lam=1.0, eps0=1e-3, exact=exact).add_gradient(
            problem, batch, cell_weights, cell_grads, StepContext(epoch=1, epochs=2))
        assert torch.equal(torch.get_rng_state(), rng)
        assert all(torch.equal(a, b) for a, b in zip(problem.net.buffers(), buffers, strict=True))


def test_lambda_ramp_and_metrics():
    reg = LambdaRegularizer(lam=0.4)
    assert [reg.lambda_at(e, 5) for e in range(5)] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    assert reg.lambda_at(0, 1) == 0.4  # a one-epoch search is its own last epoch
    problem, batch = _problem(), _batch()
    cell_weights, cell_grads = _weight_backward(problem, batch)
    grads = [p.grad.clone() for p in problem.weights]
    # lambda_t = 0: w.grad untouched
    reg.add_gradient(problem, batch, cell_weights, cell_grads, StepContext(epoch=0, epochs=5))
    assert all(torch.equal(p.grad, g) for p, g in zip(problem.weights, grads, strict=True))
    metrics = reg.metrics()
    assert metrics["lambda_t"] == 0.0
    assert float(metrics["R.cell"]) == pytest.approx(float(gradient_alignment(cell_grads)))
    reg.add_gradient(problem, batch, cell_weights, cell_grads, StepContext(epoch=3, epochs=5))
    assert reg.metrics()["lambda_t"] == pytest.approx(0.3)
    assert any(not torch.equal(p.grad, g) for p, g in zip(problem.weights, grads, strict=True))


# ------------------------------------------------------------------------------------ end to end


@pytest.mark.parametrize("space,extra", [
    ("nb201", []),
    ("darts", ["layers=4", "channels=2"]),  # normal cells 0 and 3
    ("nb201", ["weight_regularizers.lambda.measure=signcorr"]),
])
def test_search_with_the_preset_logs_alignment_and_ramp(tmp_path, tiny, space, extra):
    cfg = resolve_config({"space": space, "method": "lambda-darts", "epochs": 2, "batch_size": 16},
                         [*tiny, "max_images=64", "log_every=1", "alignment_every=1", *extra])
    (reg,) = cfg.weight_regularizers
    assert reg.name == "lambda" and reg.params["lam"] == 0.25
    assert reg.params["eps0"] == (1e-4 if space == "nb201" else 1e-3)
    assert cfg.a_lr == (1e-4 if space == "nb201" else 3e-4) and cfg.estimator.name == "first-order"
    Search(cfg, tmp_path / "run", progress=False).run()
    steps = _records(tmp_path / "run")
    cell_type = "cell" if space == "nb201" else "normal"
    key = f"weight_regularizers.0.R.{cell_type}"
    # R is the alignment of this step's per-cell gradients of the regularized type: with corr it is the
    # loop's own alignment diagnostic of the same gradients (computed apart, from the loop's cell gradients)
    for r in steps:
        if reg.params["measure"] == "corr":
            assert r[key] == pytest.approx(r[f"alignment.{cell_type}"], rel=1e-5, abs=1e-7)
        else:
            assert key in r and r[key] != pytest.approx(r[f"alignment.{cell_type}"], rel=1e-3)
    assert "weight_regularizers.0.R.reduce" not in steps[0]
    assert {r["weight_regularizers.0.lambda_t"] for r in steps} == {0.0, 0.25}
    assert all(r["train_loss"] == r["train_loss"] for r in steps)  # finite
    assert _records(tmp_path / "run", "epoch")[-1]["genotype"]


def test_cli_search_with_lambda_darts_and_an_exact_gated_combination(tmp_path):
    """The CLI runs the preset; the regularizer composes with a masking activation (hard-concrete gates)."""
    assert main(["search", "--space", "nb201", "--method", "lambda-darts", "--epochs", "1", "--batch-size", "8",
                 "--out", str(tmp_path / "cli"), "--quiet", "channels=2", "layers=1", "max_images=32",
                 "log_every=1"]) == 0
    assert "weight_regularizers.0.R.cell" in _records(tmp_path / "cli")[0]
    cfg = resolve_config({"space": "nb201", "method": "lambda-darts", "epochs": 1, "batch_size": 8},
                         ["channels=2", "layers=1", "max_images=32", "log_every=1", "activation=hard-concrete",
                          "activation.top_k=2", "weight_regularizers.lambda.exact=true"])
    Search(cfg, tmp_path / "gated", progress=False).run()
    assert all("weight_regularizers.0.R.cell" in r for r in _records(tmp_path / "gated"))


def test_registered_under_its_slot():
    assert WEIGHT_REGULARIZERS.get("lambda") is LambdaRegularizer
    assert LambdaRegularizer.needs_cell_gradients
