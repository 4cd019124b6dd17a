"""Activations' ``exclude``: ops taken out of the competition (Lambda-DARTS' 7-op DARTS space)."""

import pytest
import torch

from dnas.bilevel.problem import BilevelProblem
from dnas.bilevel.run import Search
from dnas.components.activations import Softmax
from dnas.components.hard_concrete import HardConcrete
from dnas.components.pr_darts import PathRegularizer
from dnas.components.prime import Clamp
from dnas.config.resolve import resolve_config
from dnas.errors import DnasError
from dnas.spaces import get_space
from dnas.spaces.darts import DARTS_OPS
from dnas.spaces.nb201 import NB201_OPS
from dnas.supernet import build_supernet

DARTS, NB201 = get_space("darts"), get_space("nb201")
NONE = DARTS_OPS.index("none")


def _bound(activation, space=DARTS):
    activation.bind(space)
    return activation


def test_softmax_without_none_is_the_softmax_over_the_seven_other_ops():
    act = _bound(Softmax(exclude="none"))
    alpha = torch.randn(14, 8, dtype=torch.float64, requires_grad=True)
    a = act(alpha, "normal")
    assert (a[:, NONE] == 0).all()  # exactly 0
    others = [k for k in range(8) if k != NONE]
    torch.testing.assert_close(a[:, others], torch.softmax(alpha[:, others], dim=-1))  # not in the normaliser
    (a * torch.randn(14, 8, dtype=torch.float64)).sum().backward()
    assert (alpha.grad[:, NONE] == 0).all() and (alpha.grad[:, others] != 0).all()
    mask = act.active_mask({"normal": a, "reduce": a})
    assert mask["normal"].device.type == "cpu" and not mask["normal"][:, NONE].any() and mask["normal"][:, others].all()
    assert torch.equal(act.strength(alpha, "normal"), a)
    plain = _bound(Softmax())
    assert plain.active_mask({"normal": a}) is None and (plain(alpha, "normal")[:, NONE] > 0).all()


def test_excluded_ops_are_not_computed_and_the_supernet_output_is_the_seven_op_one():
    torch.manual_seed(0)
    net = build_supernet(DARTS, num_classes=3, in_channels=1, channels=4, layers=3).double()
    act = _bound(Softmax(exclude="skip_connect,none"))
    alphas = {t: torch.randn(14, 8, dtype=torch.float64) for t in DARTS.cell_types}
    weights = {t: act(a, t) for t, a in alphas.items()}
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    calls = []
    for cell in net.cells:
        for source in cell.nodes.sources:
            source.kinds["skip_connect"].register_forward_hook(lambda *args: calls.append(1))
    masked = net(x, net.per_cell(weights), act.active_mask(weights))
    assert not calls  # skip_connect is never run
    full = net(x, net.per_cell(weights), None)  # computed but multiplied by exactly 0
    assert calls
    torch.testing.assert_close(masked, full)


def test_exclude_is_checked_against_the_space():
    with pytest.raises(DnasError, match="exclude names noise, which the darts space does not have"):
        _bound(Softmax(exclude="noise"))
    with pytest.raises(DnasError, match="leaves an edge of the s2 normal cell without any op"):
        _bound(Softmax(exclude="skip_connect,sep_conv_3x3"), get_space("s2"))
    with pytest.raises(DnasError, match="bind"):
        Softmax(exclude="none")(torch.zeros(14, 8), "normal")


def test_hard_concrete_gates_of_excluded_ops_are_closed_and_never_selected():
    torch.manual_seed(0)
    act = _bound(HardConcrete(tau_max=1.0, top_k=2, drop_prob=0.4, straight_through=True,
                              exclude="skip_connect"), NB201)
    skip = NB201_OPS.index("skip_connect")
    beta = torch.zeros(6, 5)
    beta[:, skip] = 30.0  # the gate would always be fully open and always win the selection
    beta.requires_grad_(True)
    for _ in range(50):
        a = act(beta, "cell")
        assert (a[:, skip] == 0).all() and ((a != 0).sum(dim=1) == 2).all()
    (a.sum()).backward()
    assert (beta.grad[:, skip] == 0).all()
    assert (act.probability(beta, "cell")[:, skip] == 0).all() and (act.strength(beta, "cell")[:, skip] == 0).all()
    # the PR-DARTS groups do not count it: the skip group is empty, the non-skip mean is over the 4 other ops
    net = build_supernet(NB201, num_classes=3, in_channels=1, channels=2, layers=1)
    problem = BilevelProblem(net, torch.nn.ParameterDict({"cell": torch.nn.Parameter(beta.detach().clone())}), act)
    raw = PathRegularizer().groups(problem, problem.activated())
    p = act.probability(beta.detach(), "cell")
    assert float(raw["skip"].detach()) == 0.0
    assert float(raw["nonskip"].detach()) == pytest.approx(float(p.sum() / 24), rel=1e-6)


def test_clamp_excludes_none_always_and_more_on_request():
    act = _bound(Clamp(exclude="max_pool_3x3"))
    alpha = act.init_alpha((14, 8), torch.Generator().manual_seed(0))
    pool = DARTS_OPS.index("max_pool_3x3")
    assert (alpha[:, [NONE, pool]] == 0).all() and (alpha[:, 2:] - 1 / 6).abs().max() < 1e-3  # 1/6 live ops
    assert (act(torch.full((14, 8), 0.5), "normal")[:, [NONE, pool]] == 0).all()
    assert act.excluded_ops() == {"none", "max_pool_3x3"}


def test_lambda_darts_searches_the_darts_space_without_none(tmp_path):
    cfg = resolve_config({"space": "darts", "method": "lambda-darts", "epochs": 1, "batch_size": 8},
                         ["channels=2", "layers=4", "max_images=48", "a_lr=0.05"])
    assert cfg.activation.params["exclude"] == "none"
    search = Search(cfg, tmp_path / "run", progress=False)
    search.run()
    for t, strengths in search.problem.strengths().items():
        assert (strengths[:, NONE] == 0).all()
        torch.testing.assert_close(strengths.sum(dim=1), torch.ones(14))
        assert (search.problem.alphas[t].grad[:, NONE] == 0).all()
    assert resolve_config({"space": "s3", "method": "lambda-darts"}).activation.params["exclude"] == ""
