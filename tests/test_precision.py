"""``precision=bf16``: the supernet's forward passes run under bfloat16 autocast, the loss and every
gradient that leaves the network stay float32, and Hessian-vector products, finite differences and
the Hessian diagnostic run in float32."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY
from torch import nn

import dnas
from dnas.bilevel import BilevelProblem
from dnas.components.activations import Softmax
from dnas.components.estimators import Amended, FirstOrder, SecondOrder
from dnas.components.lambda_darts import LambdaRegularizer
from dnas.errors import DnasError
from dnas.hessian import dominant_eigenvalue
from dnas.resolve import resolve_config
from dnas.spaces import get_space
from dnas.supernet import build_supernet


def _problem(seed: int = 0) -> tuple[BilevelProblem, tuple, tuple]:
    """A float32 NB201 supernet (C=4, one cell per stage: 3 normal cells) and two batches."""
    space = get_space("nb201")
    torch.manual_seed(seed)
    net = build_supernet(space, num_classes=3, in_channels=3, channels=4, layers=1)
    g = torch.Generator().manual_seed(seed)
    alphas = nn.ParameterDict({t: nn.Parameter(0.5 * torch.randn(s, generator=g))
                               for t, s in space.alpha_shapes().items()})
    problem = BilevelProblem(net, alphas, Softmax())
    problem.weight_lr = 0.1
    batches = [(torch.randn(8, 3, 8, 8, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(2)]
    return problem, batches[0], batches[1]


def _arch_grad(problem: BilevelProblem, estimator, train, val) -> torch.Tensor:
    torch.manual_seed(5)
    for a in problem.arch:
        a.grad = None
    estimator.arch_gradient(problem, train, val)
    return torch.cat([a.grad.reshape(-1) for a in problem.arch])


def _spy_precision(problem: BilevelProblem, monkeypatch) -> list[torch.dtype | None]:
    """Record the autocast dtype of every forward pass of ``problem``."""
    seen: list[torch.dtype | None] = []
    forward = problem.forward

    def spying(*args, **kwargs):
        seen.append(problem.autocast_dtype)
        return forward(*args, **kwargs)

    monkeypatch.setattr(problem, "forward", spying)
    return seen


def test_bf16_autocasts_the_forward_and_returns_float32_logits():
    problem, batch, _ = _problem()
    reference = problem.forward(batch[0]).detach()
    problem.autocast_dtype = torch.bfloat16
    logits = problem.forward(batch[0])
    assert logits.dtype == torch.float32
    error = (logits - reference).abs().max() / reference.abs().max()
    assert 0 < error < 0.05  # rounded to an 8-bit mantissa inside, not float32 any more
    with problem.full_precision():
        assert torch.equal(problem.forward(batch[0]), reference)
    assert problem.autocast_dtype is torch.bfloat16  # restored after the block


def test_first_order_gradient_is_bf16_and_curvature_estimators_are_float32():
    problem, train, val = _problem()
    fp32 = {cls: _arch_grad(problem, cls(), train, val) for cls in (FirstOrder, SecondOrder, Amended)}
    problem.autocast_dtype = torch.bfloat16
    bf16 = {cls: _arch_grad(problem, cls(), train, val) for cls in (FirstOrder, SecondOrder, Amended)}
    assert not torch.equal(bf16[FirstOrder], fp32[FirstOrder])
    # the same direction, with bf16 rounding noise: on this C=4 net and batch of 8, cosine 0.98-0.99 and
    # a relative error of 16-22% over seeds 0-3 (each alpha gradient sums few, coarsely rounded terms)
    a, b = fp32[FirstOrder], bf16[FirstOrder]
    assert torch.nn.functional.cosine_similarity(a, b, 0) > 0.95
    assert (a - b).norm() < 0.35 * a.norm()
    for cls in (SecondOrder, Amended):
        assert torch.equal(bf16[cls], fp32[cls]), cls.name


def test_lambda_finite_differences_and_the_hessian_diagnostic_run_in_float32(monkeypatch):
    problem, batch, _ = _problem()
    problem.autocast_dtype = torch.bfloat16
    seen = _spy_precision(problem, monkeypatch)
    loss, _, cell_weights = problem.weight_loss(batch, cell_gradients=True)
    loss.backward()
    assert seen == [torch.bfloat16]  # the weight step's own pass
    cell_grads = [w.grad for w in cell_weights]
    LambdaRegularizer(lam=1.0).add_gradient(problem, batch, cell_weights, cell_grads, 1, 2)
    assert seen[1:] == [None, None]  # the two passes at A +- eps p
    seen.clear()
    assert dominant_eigenvalue(problem, batch, iters=2) == dominant_eigenvalue(problem, batch, iters=2)
    assert seen and set(seen) == {None}
    assert problem.autocast_dtype is torch.bfloat16


def test_a_bf16_search_runs_end_to_end_and_keeps_its_precision_in_the_config(tmp_path):
    result = dnas.search("nb201", "darts", out=tmp_path / "run", epochs=1, overrides=[*TINY, "precision=bf16"])
    assert result.config.precision == "bf16"
    assert "precision: bf16" in (tmp_path / "run" / "config.yaml").read_text()
    assert result.genotype is not None and result.metrics


def test_unknown_precision_is_a_user_error():
    with pytest.raises(DnasError, match="precision must be one of fp32, bf16"):
        resolve_config({"space": "nb201"}, ["precision=fp16"])


def test_runs_saved_before_the_precision_key_existed_still_resume_and_are_reused():
    from dnas.runs import config_differences

    current = {"epochs": 3, "precision": "fp32"}
    assert config_differences({"epochs": 3}, current, defaults={"precision": "fp32"}) == []
    assert config_differences({"epochs": 3}, {**current, "precision": "bf16"}, defaults={"precision": "fp32"}) \
        == ["precision"]
    assert config_differences({"epochs": 3}, current) == ["precision"]  # no defaults: a missing key differs


def test_a_search_saved_without_the_precision_key_resumes(tmp_path):
    import yaml

    out = tmp_path / "run"
    dnas.search("nb201", "darts", out=out, epochs=1, overrides=TINY)
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    del state["config"]["precision"]  # as written by a dnas without the key
    torch.save(state, out / "checkpoint.pt")
    saved = yaml.safe_load((out / "config.yaml").read_text())
    del saved["precision"]
    (out / "config.yaml").write_text(yaml.safe_dump(saved))
    # the same command finds the finished run and returns its result
    again = dnas.search("nb201", "darts", out=out, epochs=1, overrides=TINY)
    assert again.genotype == dnas.search("nb201", "darts", out=tmp_path / "fresh", epochs=1, overrides=TINY).genotype
