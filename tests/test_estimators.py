"""Hypergradient estimators: formulas on a bilevel ridge regression with a closed-form inner
solution, exact vs finite-difference HVPs on the real supernets, side effects, presets end to end."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from dnas.bilevel.problem import BilevelProblem, StepContext
from dnas.bilevel.run import Search
from dnas.components import ESTIMATORS
from dnas.components.activations import Activation, Softmax
from dnas.components.estimators import Amended, FirstOrder, SecondOrder
from dnas.components.regularizers import ArchRegularizer
from dnas.errors import DnasError
from dnas.spaces import get_space
from dnas.supernet import build_supernet

D = torch.float64
LAM, RHO = 0.1, 0.3
LR = 0.3  # the weight learning rate the toy's estimators see (second order's default xi)
CTX = StepContext(weight_lr=LR)


# ----- a bilevel ridge regression, as a BilevelProblem --------------------------------------------
class FeatureNet(nn.Module):
    """``pred = X (A ⊙ w)`` (``A`` = activated architecture: per-feature weights), or ``X w``."""

    cell_types = ["x"]
    space = None  # not a supernet of a search space

    def __init__(self, w: torch.Tensor, weighted: bool = True):
        super().__init__()
        self.w = nn.Parameter(w.clone())
        self.weighted = weighted

    def per_cell(self, by_type):
        return [by_type["x"]]

    def forward(self, x, cell_weights, active=None):
        return x @ (cell_weights[0] * self.w) if self.weighted else x @ self.w


class Exp(Activation):
    def __call__(self, alpha, cell_type):
        return torch.exp(alpha)


class Pull(ArchRegularizer):
    """``R(alpha) = rho/2 ||A(alpha) - 1||^2``."""

    def __call__(self, problem, activated, ctx=None):
        return {"pull": RHO / 2 * ((activated["x"] - 1) ** 2).sum()}


class Ridge(BilevelProblem):
    """``L(w, alpha; X, y) = 1/2 mean((X (e^alpha ⊙ w) - y)^2) + lam/2 ||w||^2`` at both levels."""

    def loss(self, batch, activated=None, cell_weights=None):
        x, y = batch
        pred = self.forward(x, activated, cell_weights)
        return 0.5 * ((pred - y) ** 2).mean() + 0.5 * LAM * (self.net.w**2).sum(), pred


def ridge_loss(w, alpha, batch):
    """The same loss, written independently of the estimators' code path."""
    x, y = batch
    return 0.5 * ((x @ (torch.exp(alpha) * w) - y) ** 2).mean() + 0.5 * LAM * w @ w


def pull(alpha):
    return RHO / 2 * ((torch.exp(alpha) - 1) ** 2).sum()


def grad(f, *args, i=0):
    args = [a.detach().clone().requires_grad_(True) if isinstance(a, torch.Tensor) else a for a in args]
    return torch.autograd.grad(f(*args), args[i])[0]


def blocks(w, alpha, batch):
    """Explicit ``H = grad^2_w L`` and ``B = grad^2_{alpha,w} L`` (rows: alpha) of ``ridge_loss``."""
    d = len(w)
    h = torch.autograd.functional.hessian(lambda z: ridge_loss(z[:d], z[d:], batch), torch.cat([w, alpha]))
    return h[:d, :d], h[d:, :d]


def inner_optimum(alpha, batch):
    """``w*(alpha) = (Z^T Z / n + lam I)^{-1} Z^T y / n`` with ``Z = X diag(e^alpha)`` (differentiable)."""
    x, y = batch
    z = x * torch.exp(alpha)
    n, d = x.shape
    return torch.linalg.solve(z.T @ z / n + LAM * torch.eye(d, dtype=D), z.T @ y / n)


def toy(seed=0, d=4):
    g = torch.Generator().manual_seed(seed)
    train = (torch.randn(12, d, generator=g, dtype=D), torch.randn(12, generator=g, dtype=D))
    val = (torch.randn(10, d, generator=g, dtype=D), torch.randn(10, generator=g, dtype=D))
    alpha = 0.3 * torch.randn(d, generator=g, dtype=D)
    w = torch.randn(d, generator=g, dtype=D)
    problem = Ridge(FeatureNet(w), nn.ParameterDict({"x": nn.Parameter(alpha.clone())}), Exp(), [Pull()])
    return problem, train, val


def estimate(estimator, problem, train, val, ctx=CTX):
    w0 = problem.net.w.detach().clone()
    estimator.arch_gradient(problem, train, val, ctx)
    assert torch.equal(problem.net.w, w0) and problem.net.w.grad is None  # no trace on the weights
    return problem.alphas["x"].grad.clone()


def val_objective(w, alpha, val):
    return ridge_loss(w, alpha, val) + pull(alpha)


def test_true_hypergradient_of_the_toy_is_the_implicit_function_formula():
    problem, train, val = toy()
    alpha = problem.alphas["x"].detach()
    true = grad(lambda a: val_objective(inner_optimum(a, train), a, val), alpha)
    w_star = inner_optimum(alpha, train)
    assert grad(ridge_loss, w_star, alpha, train).abs().max() < 1e-12  # an inner optimum
    h, b = blocks(w_star, alpha, train)
    ift = grad(val_objective, w_star, alpha, val, i=1) - b @ torch.linalg.solve(h, grad(ridge_loss, w_star, alpha, val))
    assert torch.allclose(ift, true, rtol=1e-10, atol=1e-12)


def test_first_order_is_the_direct_gradient():
    problem, train, val = toy()
    w, alpha = problem.net.w.detach(), problem.alphas["x"].detach()
    expected = grad(val_objective, w, alpha, val, i=1)
    assert torch.allclose(estimate(FirstOrder(), problem, train, val), expected, rtol=1e-12)


@pytest.mark.parametrize("hvp", ["exact", "fd"])
@pytest.mark.parametrize("xi", [None, 0.7])
def test_second_order_equals_its_formula(hvp, xi):
    problem, train, val = toy()
    w, alpha = problem.net.w.detach(), problem.alphas["x"].detach()
    step = LR if xi is None else xi
    w_unrolled = w - step * grad(ridge_loss, w, alpha, train)
    _, b = blocks(w, alpha, train)
    expected = (grad(val_objective, w_unrolled, alpha, val, i=1)
                - step * b @ grad(ridge_loss, w_unrolled, alpha, val))
    got = estimate(SecondOrder(xi=xi, hvp=hvp), problem, train, val)
    # the loss is quadratic in w, so central differences are exact up to rounding
    assert torch.allclose(got, expected, rtol=1e-9, atol=1e-12)
    # and it is the derivative through the unrolled step
    through = grad(lambda a: val_objective(_unrolled(w, a, step, train), a, val), alpha)
    assert torch.allclose(got, through, rtol=1e-9, atol=1e-12)


def _unrolled(w, alpha, step, train, constant=0.0):
    """``w - step (grad_w L_train(w, alpha) + constant)``, differentiable in ``alpha``."""
    w = w.detach().requires_grad_(True)
    return w - step * (torch.autograd.grad(ridge_loss(w, alpha, train), w, create_graph=True)[0] + constant)


def _with_momentum(problem, momentum=0.9, weight_decay=0.05):
    """A weight optimizer whose momentum buffer is set (one step on a made-up gradient): its buffer, and the
    step context that hands it to the estimators."""
    opt = torch.optim.SGD([problem.net.w], lr=LR, momentum=momentum, weight_decay=weight_decay)
    w0 = problem.net.w.detach().clone()
    problem.net.w.grad = torch.linspace(-1.0, 2.0, len(w0), dtype=D)
    opt.step()
    with torch.no_grad():
        problem.net.w.copy_(w0)  # the buffer is kept, the weights are put back
    problem.net.w.grad = None
    return opt.state[problem.net.w]["momentum_buffer"].clone(), StepContext(weight_lr=LR, weight_optimizer=opt)


@pytest.mark.parametrize("hvp", ["exact", "fd"])
def test_second_order_virtual_step_uses_the_optimizers_momentum_and_weight_decay(hvp):
    """DARTS' code: w' = w - xi (mu m + grad_w L_train + lambda w)."""
    problem, train, val = toy()
    m, ctx = _with_momentum(problem)
    w, alpha, xi = problem.net.w.detach(), problem.alphas["x"].detach(), LR
    constant = 0.9 * m + 0.05 * w
    w_unrolled = w - xi * (grad(ridge_loss, w, alpha, train) + constant)
    _, b = blocks(w, alpha, train)
    expected = grad(val_objective, w_unrolled, alpha, val, i=1) - xi * b @ grad(ridge_loss, w_unrolled, alpha, val)
    got = estimate(SecondOrder(hvp=hvp), problem, train, val, ctx)
    assert torch.allclose(got, expected, rtol=1e-9, atol=1e-12)
    through = grad(lambda a: val_objective(_unrolled(w, a, xi, train, constant), a, val), alpha)
    assert torch.allclose(got, through, rtol=1e-9, atol=1e-12)
    # the paper's plain step ignores the optimizer; without the momentum term the two differ
    plain = estimate(SecondOrder(hvp=hvp, virtual_step="gradient"), problem, train, val, ctx)
    assert torch.allclose(plain, estimate(SecondOrder(hvp=hvp), toy()[0], train, val), rtol=1e-9, atol=1e-12)
    assert (plain - got).norm() > 1e-3 * got.norm()


def test_the_loop_hands_the_current_lr_and_the_weight_optimizer_to_the_estimator(tiny_search, monkeypatch):
    seen = []
    original = SecondOrder.arch_gradient

    def record(self, problem, train_batch, val_batch, ctx):
        buffers = [ctx.weight_optimizer.state.get(p, {}).get("momentum_buffer") for p in problem.weights]
        seen.append((ctx.weight_lr, ctx.weight_optimizer, all(b is not None for b in buffers)))
        return original(self, problem, train_batch, val_batch, ctx)

    monkeypatch.setattr(SecondOrder, "arch_gradient", record)
    search = tiny_search("darts-2nd", epochs=3, batch_size=8, overrides=["max_images=48", "w_lr=0.1", "w_lr_min=0.01"])
    search.run()
    n = search.algorithm.steps_per_epoch
    assert n >= 2
    cosine = [0.01 + (0.1 - 0.01) * (1 + math.cos(math.pi * e / 3)) / 2 for e in range(3)]
    assert [lr for lr, _, _ in seen] == pytest.approx([lr for lr in cosine for _ in range(n)], rel=1e-12)
    assert all(opt is search.algorithm.w_opt for _, opt, _ in seen)
    assert [ready for _, _, ready in seen] == [False] + [True] * (3 * n - 1)  # momentum after the first w step


@pytest.mark.parametrize("hvp", ["exact", "fd"])
def test_amended_equals_its_formula(hvp):
    problem, train, val = toy()
    w, alpha = problem.net.w.detach(), problem.alphas["x"].detach()
    h, b = blocks(w, alpha, train)
    expected = grad(val_objective, w, alpha, val, i=1) - 0.25 * b @ h @ grad(ridge_loss, w, alpha, val)
    got = estimate(Amended(eta=0.25, hvp=hvp), problem, train, val)
    assert torch.allclose(got, expected, rtol=1e-9, atol=1e-12)


class QuarticRidge(Ridge):
    """``Ridge`` plus ``1/4 sum (A ⊙ w)^4``: the gradient is cubic in ``w``, so a central difference of
    radius ``R`` errs by ``O(R^2)`` and the radii of the two products matter."""

    def loss(self, batch, activated=None, cell_weights=None):
        quadratic, pred = super().loss(batch, activated, cell_weights)
        activated = self.activated() if activated is None else activated
        return quadratic + 0.25 * ((activated["x"] * self.net.w) ** 4).sum(), pred


def quartic_loss(w, alpha, batch):
    return ridge_loss(w, alpha, batch) + 0.25 * ((torch.exp(alpha) * w) ** 4).sum()


def test_amended_finite_differences_use_radius_r_over_the_norm_of_each_vector():
    problem, train, val = toy()
    problem = QuarticRidge(problem.net, problem.alphas, Exp(), [Pull()])
    w, alpha, r = problem.net.w.detach(), problem.alphas["x"].detach(), 0.5

    def central(f, at, direction, radius, i):
        return (grad(f, at + radius * direction, alpha, train, i=i)
                - grad(f, at - radius * direction, alpha, train, i=i)) / (2 * radius)

    v = grad(quartic_loss, w, alpha, val)  # grad_w of L_val (the pull does not depend on w)
    u = central(quartic_loss, w, v, r / v.norm(), i=0)  # first product: radius r / ||v||
    z = central(quartic_loss, w, u, r / u.norm(), i=1)  # second product: radius r / ||u||
    direct = grad(lambda ww, a, b: quartic_loss(ww, a, b) + pull(a), w, alpha, val, i=1)
    expected = direct - 0.1 * z
    got = estimate(Amended(eta=0.1, hvp="fd", fd_radius=r), problem, train, val)
    assert torch.allclose(got, expected, rtol=1e-10, atol=1e-12)
    # the radius matters at this size: r/||v|| for the second product, or the exact products, differ
    wrong = direct - 0.1 * central(quartic_loss, w, u, r / v.norm(), i=1)
    exact = estimate(Amended(eta=0.1, hvp="exact"), problem, train, val)
    assert (wrong - got).norm() > 1e-4 * got.norm() and (exact - got).norm() > 1e-4 * got.norm()
    # and a smaller radius (the option the collapse protocol compares) brings fd to the exact products
    small = estimate(Amended(eta=0.1, hvp="fd", fd_radius=1e-4), problem, train, val)
    assert (small - exact).norm() < 1e-6 * exact.norm()


class PenaltyRidge(BilevelProblem):
    """Hyper-parameter optimisation: ``L_train = 1/2 mean((X w - y)^2) + 1/2 sum_i e^alpha_i w_i^2``,
    ``L_val = 1/2 mean((X_v w - y_v)^2)``; a batch ``(X, y, c)`` carries the penalty factor ``c``."""

    def loss(self, batch, activated=None, cell_weights=None):
        x, y, c = batch
        activated = self.activated() if activated is None else activated
        pred = self.forward(x, activated, cell_weights)
        return 0.5 * ((pred - y) ** 2).mean() + c * 0.5 * (activated["x"] * self.net.w**2).sum(), pred


def test_amended_direction_decreases_the_true_objective_at_the_inner_optimum():
    """With orthogonal training features ``H = I + diag(e^alpha)`` and ``B = diag(e^alpha ⊙ w*)``
    commute, so ``<g_amended, g_true> = eta sum_i (B_ii v_i)^2 > 0``. (Without that structure the
    inner product ``v^T H B^T B H^{-1} v`` has no fixed sign: the guarantee is not general.)"""
    d, n = 5, 20
    g = torch.Generator().manual_seed(3)
    q, _ = torch.linalg.qr(torch.randn(n, d, generator=g, dtype=D))
    x, y = q * math.sqrt(n), torch.randn(n, generator=g, dtype=D)
    xv, yv = torch.randn(15, d, generator=g, dtype=D), torch.randn(15, generator=g, dtype=D)
    alpha = 0.5 * torch.randn(d, generator=g, dtype=D)

    def w_star(a):
        return torch.linalg.solve(x.T @ x / n + torch.diag(torch.exp(a)), x.T @ y / n)

    def objective(a):
        return 0.5 * ((xv @ w_star(a) - yv) ** 2).mean()

    true = grad(objective, alpha)
    problem = PenaltyRidge(FeatureNet(w_star(alpha), weighted=False),
                           nn.ParameterDict({"x": nn.Parameter(alpha.clone())}), Exp())
    train, val = (x, y, 1.0), (xv, yv, 0.0)
    for hvp in ("exact", "fd"):
        amended = estimate(Amended(eta=0.1, hvp=hvp), problem, train, val)
        assert amended @ true > 0.0
        assert objective(alpha - 1e-3 * amended / amended.norm()) < objective(alpha)
    assert estimate(FirstOrder(), problem, train, val).abs().max() == 0.0  # alpha is not in L_val


def test_invalid_hyper_parameters_are_user_errors():
    with pytest.raises(DnasError, match="exact, fd"):
        SecondOrder(hvp="forward")
    with pytest.raises(DnasError, match="eta"):
        Amended(eta=-0.1)
    with pytest.raises(DnasError, match="xi"):
        SecondOrder(xi=-1.0)
    with pytest.raises(DnasError, match="fd_radius"):
        Amended(fd_radius=0.0)
    assert {"first-order", "second-order", "amended"} <= set(ESTIMATORS.names())


def test_metrics_report_the_two_terms_and_survive_a_checkpoint():
    problem, train, val = toy()
    est = Amended(hvp="exact")
    assert est.metrics() == {}
    est.arch_gradient(problem, train, val, CTX)
    m = est.metrics()
    w, alpha = problem.net.w.detach(), problem.alphas["x"].detach()
    assert float(m["direct_norm"]) == pytest.approx(grad(val_objective, w, alpha, val, i=1).norm().item())
    h, b = blocks(w, alpha, train)
    correction = 0.1 * b @ h @ grad(ridge_loss, w, alpha, val)  # eta B H v, eta = 0.1
    assert float(m["correction_norm"]) == pytest.approx(correction.norm().item(), rel=1e-10)
    other = Amended()
    other.load_state_dict(est.state_dict())
    assert other.metrics() == m


# ----- the real supernets ---------------------------------------------------------------------------
def supernet_problem(space_name, layers, seed=0, regularizers=()):
    space = get_space(space_name)
    torch.manual_seed(seed)
    net = build_supernet(space, num_classes=3, in_channels=3, channels=4, layers=layers).to(D)
    g = torch.Generator().manual_seed(seed)
    alphas = nn.ParameterDict({t: nn.Parameter(0.5 * torch.randn(s, generator=g, dtype=D))
                               for t, s in space.alpha_shapes().items()})
    problem = BilevelProblem(net, alphas, Softmax(), regularizers)
    batches = [(torch.randn(4, 3, 8, 8, generator=g, dtype=D), torch.randint(0, 3, (4,), generator=g))
               for _ in range(2)]
    return problem, *batches


SUPERNET_CTX = StepContext(weight_lr=0.1)


def arch_grad(problem, estimator, train, val, seed=11):
    torch.manual_seed(seed)  # the same noise (s4) for every estimator compared
    for a in problem.arch:
        a.grad = None
    estimator.arch_gradient(problem, train, val, SUPERNET_CTX)
    return torch.cat([a.grad.reshape(-1) for a in problem.arch])


def _smooth_max_pool(x, kernel_size, stride=None, padding=0, *args, **kwargs):
    tau = 0.5  # tau log mean exp(x / tau) over the window: a smooth stand-in for the max
    return tau * torch.log(F.avg_pool2d(torch.exp(x / tau), kernel_size, stride, padding, count_include_pad=False))


@pytest.fixture
def smooth_nonlinearities(monkeypatch):
    """ReLU -> softplus(beta=5) and max pooling -> log-mean-exp in every module that calls them.

    With ReLU, a displacement of norm r moves some pre-activations across 0: the central
    difference then also measures the kinks (curvature the exact Hessian, with ReLU'' = 0, does
    not see), and at this tiny size the two estimates differ by several times the correction
    term for any r. On a smooth network they must agree to O(r^2)."""
    monkeypatch.setattr(F, "relu", lambda x, inplace=False: F.softplus(x, beta=5.0))
    monkeypatch.setattr(F, "max_pool2d", _smooth_max_pool)


@pytest.mark.parametrize("space_name,layers", [("nb201", 1), ("darts", 3), ("s4", 3)])
def test_fd_and_exact_agree_on_smooth_supernets(smooth_nonlinearities, space_name, layers):
    problem, train, val = supernet_problem(space_name, layers)
    first = arch_grad(problem, FirstOrder(), train, val)
    for cls in (SecondOrder, Amended):
        exact = arch_grad(problem, cls(hvp="exact"), train, val)
        fd = arch_grad(problem, cls(hvp="fd", fd_radius=1e-4), train, val)
        correction = (exact - first).norm()
        assert correction > 1e-3 * first.norm()
        # stated tolerance: 1e-3 of the curvature term (observed 1e-9 .. 2e-5 at r = 1e-4)
        assert (fd - exact).norm() < 1e-3 * correction, cls.name


@pytest.mark.parametrize("space_name,layers", [("nb201", 1), ("darts", 3)])
def test_exact_second_order_is_the_gradient_through_the_unrolled_step(space_name, layers):
    problem, train, val = supernet_problem(space_name, layers)
    got = arch_grad(problem, SecondOrder(hvp="exact"), train, val)
    net, xi = problem.net, SUPERNET_CTX.weight_lr
    names = [n for n, p in net.named_parameters() if p.requires_grad]
    weights = dict(zip(names, problem.weights, strict=True))
    cells = net.per_cell(problem.activated())
    train_loss = F.cross_entropy(functional_call(net, weights, (train[0], cells, None)), train[1])
    step = torch.autograd.grad(train_loss, list(weights.values()), create_graph=True)
    unrolled = {n: w - xi * s for (n, w), s in zip(weights.items(), step, strict=True)}
    val_loss = F.cross_entropy(functional_call(net, unrolled, (val[0], cells, None)), val[1])
    expected = torch.cat([g.reshape(-1) for g in torch.autograd.grad(val_loss, problem.arch)])
    assert torch.allclose(got, expected, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("space_name,layers", [("nb201", 1), ("darts", 2), ("s4", 3)])
@pytest.mark.parametrize("hvp", ["exact", "fd"])
def test_estimators_leave_no_trace_in_the_model(space_name, layers, hvp):
    problem, train, val = supernet_problem(space_name, layers)
    net = problem.net
    net(train[0], net.per_cell(problem.activated()))  # running statistics differ from their initial values
    state = {k: v.clone() for k, v in net.state_dict().items()}
    # first order's one validation forward updates the running statistics like a training forward
    for est in (SecondOrder(hvp=hvp), Amended(hvp=hvp), FirstOrder()):
        grads = arch_grad(problem, est, train, val)
        assert torch.isfinite(grads).all()
        after = net.state_dict()
        kept = [k for k in state if est.name != "first-order" or "running" not in k and "tracked" not in k]
        assert all(torch.equal(after[k], state[k]) for k in kept)  # weights and BN buffers
        assert all(p.grad is None for p in problem.weights)
        if layers == 2:  # both darts cells are reduction cells: the normal alpha gets a zero gradient
            assert torch.equal(problem.alphas["normal"].grad, torch.zeros_like(problem.alphas["normal"]))


def test_arch_regularizer_gradient_is_included():
    class Entropy(ArchRegularizer):
        def __call__(self, problem, activated, ctx=None):
            a = activated["cell"]
            return {"entropy": -0.05 * (a * a.log()).sum()}

    plain, train, val = supernet_problem("nb201", 1)
    regularized, _, _ = supernet_problem("nb201", 1, regularizers=[Entropy()])
    alpha = regularized.alphas["cell"]
    reg_grad = torch.autograd.grad(Entropy()(regularized, {"cell": alpha.softmax(-1)})["entropy"], alpha)[0]
    for est in (SecondOrder(hvp="exact"), Amended(hvp="exact"), FirstOrder()):
        difference = arch_grad(regularized, est, train, val) - arch_grad(plain, est, train, val)
        assert torch.allclose(difference, reg_grad.reshape(-1), rtol=1e-8, atol=1e-12)


# ----- presets end to end ---------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["darts-2nd", "amended-darts"])
@pytest.mark.parametrize("space", ["nb201", "darts"])
@pytest.mark.parametrize("hvp", ["fd", "exact"])
def test_presets_search_end_to_end(tiny_search, tmp_path, method, space, hvp):
    layers = ["layers=3"] if space == "darts" else []
    search = tiny_search(method, space=space, batch_size=4,
                         overrides=["max_images=16", *layers, f"estimator.hvp={hvp}"])  # two steps
    assert search.cfg.estimator.name == {"darts-2nd": "second-order", "amended-darts": "amended"}[method]
    assert search.cfg.estimator.params["hvp"] == hvp
    search.run()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["kind"] == "step"]
    assert steps and search.algorithm.arch_steps == search.global_step and steps[-1]["arch_steps"] == steps[-1]["step"]
    assert all(math.isfinite(r["val_loss"]) for r in steps)
    metrics = search.algorithm.estimator.metrics()  # the last step's terms are what the last record logs
    assert steps[-1]["estimator.correction_norm"] == float(metrics["correction_norm"]) > 0
    assert steps[-1]["estimator.direct_norm"] == float(metrics["direct_norm"]) > 0


@pytest.mark.parametrize("method,hvp", [("darts-2nd", "fd"), ("amended-darts", "exact")])
def test_interrupted_search_resumes_to_the_same_result(tiny_search, interrupt_at, tmp_path, method, hvp):
    def run(name):
        search = tiny_search(method, epochs=2, batch_size=8, name=name, overrides=[
            "max_images=48", "checkpoint_every=2", "log_every=1", f"estimator.hvp={hvp}"])
        search.run()
        return search

    reference = run("ref")
    interrupt_at(Search, 4)
    with pytest.raises(DnasError, match="interrupted"):
        run("resumed")
    interrupt_at(Search, None)
    resumed = run("resumed")
    assert torch.equal(resumed.problem.alphas["cell"], reference.problem.alphas["cell"])
    lines = [[{k: v for k, v in json.loads(line).items() if k != "seconds"}
              for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()] for name in ("ref", "resumed")]
    assert lines[0] == lines[1]


@pytest.mark.parametrize("cls", [SecondOrder, Amended])
def test_metrics_break_the_curvature_term_down_by_op(cls):
    problem, train, val = supernet_problem("nb201", 1)
    first = arch_grad(problem, FirstOrder(), train, val).view(problem.alphas["cell"].shape)
    estimator = cls(hvp="exact")
    got = arch_grad(problem, estimator, train, val).view(first.shape)
    ops = get_space("nb201").cells["cell"].edge_ops[0]
    metrics = estimator.metrics()
    assert {k for k in metrics if k.startswith("correction.")} == {f"correction.cell.{op}" for op in ops}
    if cls is Amended:  # its direct term is first order's (second order's is taken at the unrolled weights)
        per_op = (first - got).mean(0)  # the step descends direct - correction
        for op, value in zip(ops, per_op, strict=True):
            assert float(metrics[f"correction.cell.{op}"]) == pytest.approx(float(value), rel=1e-9, abs=1e-15)
    # S1 offers different ops on different edges: no per-op mean there
    problem, train, val = supernet_problem("s1", 3)
    estimator = cls(hvp="fd")
    arch_grad(problem, estimator, train, val)
    assert not any(k.startswith("correction.") for k in estimator.metrics())
