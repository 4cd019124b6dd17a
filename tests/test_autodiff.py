"""Hessian-vector products (exact and finite difference) and the dominant-eigenvalue diagnostic."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dnas.bilevel.autodiff import (
    ExactHVP,
    FiniteDifferenceHVP,
    global_norm,
    make_hvp,
    mixed_hvp,
    preserved_buffers,
    replay_randomness,
    shifted,
    weight_hvp,
)
from dnas.bilevel.problem import BilevelProblem
from dnas.components.activations import Softmax
from dnas.diagnostics.hessian import dominant_eigenvalue, power_iteration
from dnas.spaces import get_space
from dnas.supernet import build_supernet

D = torch.float64


def _flat(tensors):
    return torch.cat([t.reshape(-1) for t in tensors])


class Smooth:
    """A smooth, non-quadratic loss of weights ``(w1, w2, unused)`` and architecture ``a`` with its
    explicit Hessian built by ``torch.autograd.functional.hessian`` on the flat vector ``[w; a]``."""

    def __init__(self, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(6, 3, generator=g, dtype=D)
        self.y = torch.randn(6, generator=g, dtype=D).sign()
        self.w = [nn.Parameter(torch.randn(3, 2, generator=g, dtype=D)),
                  nn.Parameter(torch.randn(3, generator=g, dtype=D)),
                  nn.Parameter(torch.randn(2, generator=g, dtype=D))]  # the loss does not use this one
        self.a = [nn.Parameter(torch.randn(4, generator=g, dtype=D))]

    @staticmethod
    def value(x, y, w1, w2, a):
        h = torch.tanh(x @ w1)
        pred = h @ (a[:2] * w2[:2]) + torch.sin(x @ w1).sum(1) * a[2] + w2[2] * a[3] ** 2
        return F.softplus(-y * pred).mean() + 0.1 * (w1**2).sum() * torch.exp(a[0])

    def loss(self):
        return self.value(self.x, self.y, self.w[0], self.w[1], self.a[0])

    def hessian(self):
        sizes = [p.numel() for p in self.w]

        def f(z):
            w1, w2, _unused, a = torch.split(z, [*sizes, 4])
            return self.value(self.x, self.y, w1.view(3, 2), w2, a)

        h = torch.autograd.functional.hessian(f, _flat([*self.w, *self.a]).detach())
        n = sum(sizes)
        return h[:n, :n], h[n:, :n]  # grad^2_w L and grad^2_{a,w} L

    def vector(self, seed=1, scale=1.0):
        g = torch.Generator().manual_seed(seed)
        return [scale * torch.randn(p.shape, generator=g, dtype=D) for p in self.w]


class Quadratic(Smooth):
    """``L = 1/2 w^T Q w + w^T C a + a^T a``: gradients are affine in ``w``, so central differences are exact."""

    def __init__(self, seed=0):
        super().__init__(seed)
        g = torch.Generator().manual_seed(seed + 10)
        m = torch.randn(11, 11, generator=g, dtype=D)
        self.q = m @ m.T
        self.c = torch.randn(11, 4, generator=g, dtype=D)

    def loss(self):
        w, a = _flat(self.w), self.a[0]
        return 0.5 * w @ self.q @ w + w @ self.c @ a + a @ a

    def hessian(self):
        return self.q, self.c.T


@pytest.mark.parametrize("problem_cls", [Smooth, Quadratic])
def test_exact_hvps_equal_the_explicit_hessian(problem_cls):
    prob = problem_cls()
    h_ww, h_aw = prob.hessian()
    v = prob.vector()
    assert torch.allclose(_flat(weight_hvp(prob.loss, prob.w, v)), h_ww @ _flat(v), rtol=1e-10, atol=1e-12)
    assert torch.allclose(_flat(mixed_hvp(prob.loss, prob.w, prob.a, v)), h_aw @ _flat(v), rtol=1e-10, atol=1e-12)


def test_finite_differences_are_exact_on_a_quadratic():
    prob = Quadratic()
    h_ww, h_aw = prob.hessian()
    v = prob.vector(scale=30.0)  # the radius adapts to ||v||
    fd_w = _flat(weight_hvp(prob.loss, prob.w, v, method="fd"))
    fd_a = _flat(mixed_hvp(prob.loss, prob.w, prob.a, v, method="fd"))
    assert torch.allclose(fd_w, h_ww @ _flat(v), rtol=1e-9, atol=1e-9)
    assert torch.allclose(fd_a, h_aw @ _flat(v), rtol=1e-9, atol=1e-9)


def test_finite_difference_error_shrinks_quadratically_with_the_radius():
    """Central differences: error O(R^2). A forward difference, or the ``(p - n) / 2 * R`` precedence
    bug, would not converge at all."""
    prob = Smooth()
    h_ww, h_aw = prob.hessian()
    v = prob.vector()
    errors = []
    for r in (1e-1, 1e-2):
        fd_w = _flat(weight_hvp(prob.loss, prob.w, v, method="fd", r=r))
        fd_a = _flat(mixed_hvp(prob.loss, prob.w, prob.a, v, method="fd", r=r))
        errors.append(((fd_w - h_ww @ _flat(v)).norm().item(), (fd_a - h_aw @ _flat(v)).norm().item()))
    (w1, a1), (w2, a2) = errors
    assert w2 < w1 / 50 and a2 < a1 / 50  # 100x expected
    assert w2 < 1e-4 * (h_ww @ _flat(v)).norm() and a2 < 1e-4 * (h_aw @ _flat(v)).norm()


def test_finite_difference_radius_is_r_over_norm_v_and_weights_are_restored():
    prob = Smooth()
    start = [p.detach().clone() for p in prob.w]
    seen = []

    def loss():
        seen.append(global_norm([p.detach() - s for p, s in zip(prob.w, start, strict=True)]).item())
        return prob.loss()

    v = prob.vector(scale=123.0)
    FiniteDifferenceHVP(loss, prob.w, r=0.05)(v)
    assert seen == pytest.approx([0.05, 0.05], rel=1e-10)  # displacement of norm r, both sides
    assert all(torch.equal(p, s) for p, s in zip(prob.w, start, strict=True))


def test_weights_are_restored_bit_exactly_even_when_the_loss_fails():
    prob = Smooth()
    start = [p.detach().clone() for p in prob.w]
    calls = []

    def failing():
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return prob.loss()

    with pytest.raises(RuntimeError, match="boom"):
        FiniteDifferenceHVP(failing, prob.w)(prob.vector(scale=1e3))
    assert all(torch.equal(p, s) for p, s in zip(prob.w, start, strict=True))
    with shifted(prob.w, prob.vector(), 0.1):  # a step that does not round-trip by subtraction
        pass
    assert all(torch.equal(p, s) for p, s in zip(prob.w, start, strict=True))


def test_zero_vector_and_unused_parameters_give_zeros():
    prob = Smooth()
    zero = [torch.zeros_like(p) for p in prob.w]
    for method in ("exact", "fd"):
        out = make_hvp(method, prob.loss, prob.w)(zero)
        assert all(torch.equal(o, torch.zeros_like(o)) for o in out)
        out = make_hvp(method, prob.loss, prob.w)(prob.vector())
        assert torch.equal(out[2], torch.zeros(2, dtype=D))  # w[2] does not enter the loss
    linear = ExactHVP((prob.w[1] * 2.0).sum(), prob.w)  # no curvature at all
    assert all(torch.equal(o, torch.zeros_like(o)) for o in linear(prob.vector()))


def test_make_hvp_rejects_unknown_methods():
    with pytest.raises(ValueError, match="exact, fd"):
        make_hvp("forward", lambda: torch.zeros(()), [])
    with pytest.raises(ValueError, match="positive"):
        FiniteDifferenceHVP(lambda: torch.zeros(()), [], r=0.0)


def test_replayed_randomness_repeats_draws_and_consumes_the_stream_once():
    w = nn.Parameter(torch.ones(3, dtype=D))
    noisy = replay_randomness(lambda: (w * torch.randn(3, dtype=D)).sum())
    torch.manual_seed(5)
    values = [noisy().item() for _ in range(3)]
    after = torch.randn(2)
    torch.manual_seed(5)
    first = (w * torch.randn(3, dtype=D)).sum().item()
    assert values == [first] * 3 and torch.equal(after, torch.randn(2))
    # a noisy loss becomes a valid finite-difference target: d/dw <grad, v> of a linear loss is 0
    torch.manual_seed(6)
    out = FiniteDifferenceHVP(noisy, [w])([torch.ones(3, dtype=D)])
    assert out[0].abs().max() < 1e-12


def test_preserved_buffers_undo_batchnorm_statistics():
    net = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3))
    before = {k: v.clone() for k, v in net.state_dict().items() if "running" in k or "tracked" in k}
    with preserved_buffers(net):
        net(torch.randn(4, 2, 5, 5))
        assert not torch.equal(net[1].running_mean, before["1.running_mean"])
    after = net.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())


# ----- dominant eigenvalue --------------------------------------------------------------------------
def test_power_iteration_finds_the_signed_eigenvalue_of_largest_magnitude():
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=D))
    m = q @ torch.diag(torch.tensor([-5.0, 3.0, 1.0, 0.5, 0.0, -1.0], dtype=D)) @ q.T
    value = power_iteration(lambda v: [m @ v[0]], [torch.zeros(6, dtype=D)], iters=200, tol=1e-12,
                            generator=torch.Generator().manual_seed(1))
    assert value == pytest.approx(-5.0, rel=1e-8)
    assert power_iteration(lambda v: [torch.zeros(6, dtype=D)], [torch.zeros(6, dtype=D)]) == 0.0


def test_dominant_eigenvalue_matches_the_explicit_hessian_of_a_supernet():
    space = get_space("nb201")
    torch.manual_seed(0)
    net = build_supernet(space, num_classes=3, in_channels=3, channels=4, layers=1).to(D)
    g = torch.Generator().manual_seed(0)
    alphas = nn.ParameterDict({t: nn.Parameter(torch.randn(s, generator=g, dtype=D))
                               for t, s in space.alpha_shapes().items()})
    problem = BilevelProblem(net, alphas, Softmax())
    batch = (torch.randn(4, 3, 8, 8, generator=g, dtype=D), torch.randint(0, 3, (4,), generator=g))
    buffers = [b.clone() for b in net.buffers()]

    value = dominant_eigenvalue(problem, batch, iters=300, tol=1e-12)
    assert all(torch.equal(a, b) for a, b in zip(buffers, net.buffers(), strict=True))

    shape = alphas["cell"].shape
    hessian = torch.autograd.functional.hessian(
        lambda a: problem.loss(batch, {"cell": torch.softmax(a.view(shape), -1)})[0],
        alphas["cell"].detach().reshape(-1))
    eigenvalues = torch.linalg.eigvalsh(hessian)
    dominant = eigenvalues[eigenvalues.abs().argmax()].item()
    assert value == pytest.approx(dominant, rel=1e-6)
    assert dominant_eigenvalue(problem, batch, iters=300, tol=1e-12, seed=3) == pytest.approx(dominant, rel=1e-6)
