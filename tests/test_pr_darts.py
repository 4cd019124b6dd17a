"""PR-DARTS: hard-concrete gates, the group-sparsity + path-depth regularizer, the derivation rules,
the presets, and end-to-end searches with resume."""

import json
import math

import pytest
import torch

from dnas.bilevel.methods import METHODS
from dnas.bilevel.problem import BilevelProblem
from dnas.bilevel.run import Search
from dnas.components.activations import Softmax
from dnas.components.hard_concrete import HardConcrete, gate_probability, sample_hard_concrete
from dnas.components.pr_darts import CodeRule, PaperRule, PathRegularizer, chain_edges
from dnas.config.resolve import resolve_config
from dnas.errors import DnasError
from dnas.runtime.files import read_metrics
from dnas.spaces import get_space
from dnas.spaces.darts import DARTS_OPS
from dnas.spaces.nb201 import NB201_OPS
from dnas.supernet import build_supernet

FEW = "max_images=96"  # 3 steps per epoch at batch 16
A, B = -0.1, 1.1
LN = math.log(-A / B)  # ln(-a/b) = -ln 11


def _f(t):
    return float(t.detach())


def _beta_for(p, tau):
    """beta with P(g != 0) = p at temperature tau (inverse of the closed form)."""
    p = torch.as_tensor(p, dtype=torch.float64)
    return (torch.log(p) - torch.log1p(-p) + tau * LN).float()


# ----- the gate ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("beta,tau", [(-1.0, 0.5), (0.0, 0.1), (0.5, 1.0), (2.0, 0.3), (-3.0, 2.0)])
def test_sampled_gate_frequencies_match_the_closed_form(beta, tau):
    torch.manual_seed(0)
    n = 40_000
    g = sample_hard_concrete(torch.full((n,), beta), tau, A, B)
    p_open = 1 / (1 + math.exp(-(beta - tau * LN)))  # P(g != 0)
    p_one = 1 / (1 + math.exp(-(beta - tau * math.log((1 - A) / (B - 1)))))  # P(g == 1)
    for freq, p in (((g != 0).double().mean().item(), p_open), ((g == 1).double().mean().item(), p_one)):
        assert abs(freq - p) < 4.5 * math.sqrt(p * (1 - p) / n) + 1e-4
    assert float(gate_probability(torch.tensor(beta), tau, A, B)) == pytest.approx(p_open, rel=1e-6)


def test_gates_reach_exact_zero_and_one_and_the_gradient_is_reparameterised():
    torch.manual_seed(1)
    beta = torch.zeros(2000, requires_grad=True)
    g = sample_hard_concrete(beta, 0.5, A, B)
    assert ((g >= 0) & (g <= 1)).all()
    zero, one = g == 0, g == 1
    inner = ~(zero | one)
    assert zero.sum() > 100 and one.sum() > 100 and inner.sum() > 100
    g.sum().backward()
    assert (beta.grad[zero | one] == 0).all() and (beta.grad[inner] > 0).all()
    act = HardConcrete(tau_max=0.1)
    det = act.deterministic_gate(torch.tensor([-5.0, 0.0, 5.0]))
    assert det.tolist() == [0.0, pytest.approx(0.5), 1.0]


def test_temperature_schedule_state_and_metrics():
    act = HardConcrete(tau_max=10.0, tau_min=0.1)
    taus = []
    for epoch in range(5):
        act.on_epoch_start(epoch, 5)
        taus.append(act.tau)
    assert taus == pytest.approx([10.0, 7.525, 5.05, 2.575, 0.1]) and taus[-1] == 0.1
    act.active_mask({"normal": torch.tensor([[0.0, 0.3], [1.0, 0.0]]), "reduce": torch.zeros(2, 2)})
    state = act.state_dict()
    fresh = HardConcrete(tau_max=10.0, tau_min=0.1)
    assert fresh.tau == 10.0
    fresh.load_state_dict(state)
    assert fresh.tau == act.tau == 0.1
    assert fresh.metrics() == {"tau": 0.1, "active.normal": 2.0, "active.reduce": 0.0}
    single = HardConcrete()
    single.on_epoch_start(0, 1)
    assert single.tau == 10.0


def test_active_mask_is_a_host_mask_of_the_nonzero_gates():
    act = HardConcrete(tau_max=0.1)
    torch.manual_seed(0)
    a = act(torch.tensor([[-30.0, 30.0, 0.0]] * 4), "cell")
    mask = act.active_mask({"cell": a})["cell"]
    assert mask.device.type == "cpu" and mask.dtype == torch.bool
    assert torch.equal(mask, a != 0) and not mask[:, 0].any() and mask[:, 1].all()


def test_top_k_selection_runs_k_ops_per_edge():
    torch.manual_seed(0)
    beta = torch.zeros(50, 8, requires_grad=True)
    st = HardConcrete(tau_max=1.0, top_k=2, drop_prob=0.4, straight_through=True)
    a = st(beta, "normal")
    assert ((a != 0).sum(1) == 2).all() and set(a.unique().tolist()) == {0.0, 1.0}
    (a * torch.arange(8.0)).sum().backward()
    assert (beta.grad[a == 0] == 0).all() and (beta.grad[a != 0] != 0).any()
    gated = HardConcrete(tau_max=0.2, top_k=2)
    b = torch.tensor([[5.0, 5.0, 5.0, -30.0]] * 400)  # three gates at 1: random tie-breaking
    a = gated(b, "cell")
    assert ((a != 0).sum(1) == 2).all() and (a[:, 3] == 0).all()
    counts = (a[:, :3] != 0).sum(0).float() / 400
    assert ((counts - 2 / 3).abs() < 0.1).all()
    # gate mode keeps the gate values of the selected ops
    g = HardConcrete(tau_max=1.0, top_k=3)
    torch.manual_seed(5)
    full = HardConcrete(tau_max=1.0)(torch.zeros(6, 3), "cell")
    torch.manual_seed(5)
    assert torch.equal(g(torch.zeros(6, 3), "cell"), full)


@pytest.mark.parametrize("kwargs", [{"drop_prob": 0.4}, {"straight_through": True}, {"a": 0.0}, {"b": 1.0},
                                    {"tau_min": 2.0, "tau_max": 1.0}, {"top_k": -1}])
def test_bad_gate_settings_are_user_errors(kwargs):
    with pytest.raises(DnasError):
        HardConcrete(**kwargs)


def test_strength_is_p_in_float64_and_keeps_rankings_at_high_temperature():
    act = HardConcrete(tau_max=10.0)
    s = act.strength(torch.tensor([[0.5, 0.6, -1.0]]), "cell")
    assert s.dtype == torch.float64 and s[0, 1] > s[0, 0] > s[0, 2]
    assert float(act.probability(torch.tensor(0.5))) == pytest.approx(1 / (1 + math.exp(-(0.5 + 23.979))))


# ----- the supernet skips closed gates -------------------------------------------------------------------
def test_ops_with_closed_gates_are_not_computed_and_change_nothing():
    space = get_space("nb201")
    torch.manual_seed(0)
    net = build_supernet(space, num_classes=3, in_channels=1, channels=4, layers=1)
    act = HardConcrete(tau_max=0.1)
    beta = torch.full((6, 5), 3.0)
    beta[:, NB201_OPS.index("nor_conv_1x1")] = 30.0  # always fully open
    beta[:, NB201_OPS.index("nor_conv_3x3")] = -30.0  # never open
    beta[0] = -30.0  # the whole edge 1<-0 closed
    a = act(beta, "cell")
    assert (a[:, 3] == 0).all() and (a[0] == 0).all() and (a[1:, 2] == 1).all()
    calls = {"nor_conv_3x3": 0, "nor_conv_1x1": 0}

    def counter(op):
        def hook(module, args, output):
            calls[op] += 1
        return hook

    for cell in net.cells:
        for source in cell.sources:
            for op in calls:
                source.kinds[op].register_forward_hook(counter(op))
    x = torch.randn(4, 1, 8, 8)
    masked = net(x, net.per_cell({"cell": a}), act.active_mask({"cell": a}))
    # 3 cells x 3 source nodes; source 0 still feeds the open edges 2<-0 and 3<-0
    assert calls == {"nor_conv_3x3": 0, "nor_conv_1x1": 9}
    full = net(x, net.per_cell({"cell": a}), None)
    assert calls == {"nor_conv_3x3": 9, "nor_conv_1x1": 18}
    torch.testing.assert_close(masked, full, rtol=1e-5, atol=1e-6)


# ----- the regularizer -----------------------------------------------------------------------------------
def _problem(space_name, activation, layers=None, init=0.0):
    space = get_space(space_name)
    net = build_supernet(space, num_classes=3, in_channels=1, channels=2,
                         layers=layers or (1 if space.family == "nb201" else 3))
    alphas = torch.nn.ParameterDict(
        {t: torch.nn.Parameter(torch.full(shape, init)) for t, shape in space.alpha_shapes().items()})
    return BilevelProblem(net, alphas, activation), space


# hand-made P on nb201 (edges 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2; ops none, skip, conv1x1, conv3x3, pool)
P_NB201 = torch.tensor([
    [0.5, 0.9, 0.8, 0.6, 0.5],  # chain edge
    [0.5, 0.1, 0.5, 0.5, 0.5],
    [0.5, 0.2, 0.3, 0.2, 0.5],  # chain edge
    [0.5, 0.3, 0.5, 0.5, 0.5],
    [0.5, 0.4, 0.5, 0.5, 0.5],
    [0.5, 0.5, 0.9, 0.7, 0.5],  # chain edge
], dtype=torch.float64)


def test_chains_of_consecutive_nodes():
    assert chain_edges(get_space("darts").cells["normal"]) == [1, 4, 8, 13]  # c_{k-1} -> n0 -> n1 -> n2 -> n3
    assert chain_edges(get_space("nb201").cells["cell"]) == [0, 2, 5]  # 0 -> 1 -> 2 -> 3


def test_paper_regularizer_matches_hand_computed_values_on_nb201():
    act = HardConcrete(tau_max=1.0)
    problem, _ = _problem("nb201", act)
    with torch.no_grad():
        problem.alphas["cell"].copy_(_beta_for(P_NB201, 1.0))
    reg = PathRegularizer()
    terms = reg(problem, problem.activated())
    skip = (0.9 + 0.1 + 0.2 + 0.3 + 0.4 + 0.5) / 6
    nonskip = (6 * 0.5 + 6 * 0.5 + (0.8 + 0.6) + (0.3 + 0.2) + (0.9 + 0.7) + 6 * 0.5) / 24
    path = (0.8 + 0.6) * (0.3 + 0.2) * (0.9 + 0.7)
    assert _f(terms["pr.skip"]) == pytest.approx(0.01 * skip, rel=1e-5)
    assert _f(terms["pr.nonskip"]) == pytest.approx(0.005 * nonskip, rel=1e-5)
    assert _f(terms["pr.path"]) == pytest.approx(-0.005 * path, rel=1e-5)
    m = reg.metrics()
    assert float(m["raw.path"]) == pytest.approx(path, rel=1e-5) and float(m["skip"]) == pytest.approx(0.01 * skip)


def test_paper_regularizer_averages_normal_and_reduction_cells_on_darts():
    act = HardConcrete(tau_max=1.0)
    problem, _ = _problem("darts", act)
    with torch.no_grad():
        problem.alphas["normal"].copy_(_beta_for(torch.full((14, 8), 0.5), 1.0))
        problem.alphas["reduce"].copy_(_beta_for(torch.full((14, 8), 0.25), 1.0))
    raw = PathRegularizer().groups(problem, problem.activated())
    # 4 parameterised ops per chain edge, 4 chain edges: (4 * 0.5)^4 = 16 and (4 * 0.25)^4 = 1
    assert _f(raw["path"]) == pytest.approx((16 + 1) / 2, rel=1e-5)
    assert _f(raw["skip"]) == pytest.approx(0.375, rel=1e-5)
    assert _f(raw["nonskip"]) == pytest.approx(0.375, rel=1e-5)


def test_code_regularizer_masks_by_selection_hinges_and_pools_separately():
    act = HardConcrete(tau_max=1.0)
    problem, _ = _problem("nb201", act)
    with torch.no_grad():
        problem.alphas["cell"].copy_(_beta_for(P_NB201, 1.0))
    sel = torch.zeros(6, 5)
    for e, cols in enumerate([(1, 3), (0, 4), (2, 3), (1, 4), (0, 1), (4, 2)]):
        sel[e, list(cols)] = 1.0
    reg = PathRegularizer(variant="code", hinge=0.2)
    terms = reg(problem, {"cell": sel})
    skip = (0.9 + 0.3 + 0.4) / 3
    nonskip = (0.6 + 0.5 + 0.3 + 0.2 + 0.5 + 0.9) / 6  # none + convs
    pool = (0.5 + 0.5 + 0.5) / 3
    path = 0.6 * ((0.3 + 0.2) / 2) * 0.9  # mean P of the selected convs on each chain edge
    assert _f(terms["pr.skip"]) == pytest.approx(0.01 * (skip - 0.2), rel=1e-5)
    assert _f(terms["pr.nonskip"]) == pytest.approx(0.005 * ((nonskip - 0.2) + (pool - 0.2)), rel=1e-5)
    assert _f(terms["pr.path"]) == pytest.approx(-0.005 * path, rel=1e-5)
    # a chain edge with no selected conv is left out; with none on the whole chain the reward is 0
    sel[2, 2:4] = 0
    assert _f(reg.groups(problem, {"cell": sel})["path"]) == pytest.approx(0.6 * 0.9, rel=1e-5)
    sel[[0, 5], 2:4] = 0
    assert _f(reg.groups(problem, {"cell": sel})["path"]) == 0.0
    # the hinge: groups below the threshold cost nothing
    low = PathRegularizer(variant="code", hinge=0.95)
    assert _f(low(problem, {"cell": sel})["pr.skip"]) == 0.0


def test_gradient_signs_skip_penalised_harder_and_deep_chains_rewarded():
    act = HardConcrete(tau_max=1.0)
    problem, _ = _problem("darts", act, init=-2.0)  # P = sigmoid(0.4) for every op
    reg = PathRegularizer()
    skip, pool, conv = DARTS_OPS.index("skip_connect"), DARTS_OPS.index("max_pool_3x3"), DARTS_OPS.index(
        "sep_conv_3x3")

    def grad(beta_chain_rest):
        beta = problem.alphas["normal"]
        with torch.no_grad():
            beta.fill_(-2.0)
            for e in (4, 8, 13):
                beta[e, 4:] = beta_chain_rest
        beta.grad = None
        sum(reg(problem, problem.activated()).values()).backward()
        return beta.grad.clone()

    g = grad(-2.0)
    assert (g[:, skip] > 0).all() and (g[:, pool] > 0).all()
    assert (g[:, skip] > g[:, pool]).all()  # lambda1 > lambda2: skip pushed down harder
    off_chain = [e for e in range(14) if e not in (1, 4, 8, 13)]
    assert (g[off_chain, conv] > 0).all()  # only the non-skip penalty
    assert (g[[1, 4, 8, 13], conv] < 0).all()  # the path reward raises convs on the chain
    g_deep = grad(3.0)  # the rest of the chain open: a deeper active chain
    assert g_deep[1, conv] < g[1, conv] < 0  # raising the chain's first edge pays more


@pytest.mark.parametrize("space_name", ["s1", "s2", "s3", "s4"])
def test_regularizer_on_the_robust_darts_spaces(space_name):
    problem, space = _problem(space_name, HardConcrete(tau_max=1.0))
    reg = PathRegularizer()
    terms = reg(problem, problem.activated())
    sum(terms.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in problem.arch)
    p_open = 1 / (1 + math.exp(-(0.0 - LN)))  # beta = 0 everywhere, tau = 1
    # one parameterised op per chain edge, except s1's normal edge 5<-4 (dil3, dil5): mean of 2 p^4 and p^4
    factor = 1.5 if space_name == "s1" else 1.0
    assert _f(terms["pr.path"]) == pytest.approx(-0.005 * factor * p_open**4, rel=1e-5)
    has_skip = space_name != "s4"  # s4 = {noise, sep_conv_3x3}: the skip group is empty
    assert _f(terms["pr.skip"]) == pytest.approx(0.01 * p_open if has_skip else 0.0, rel=1e-5)


def test_regularizer_coefficients_are_checked():
    with pytest.raises(DnasError, match="lambda1 >= lambda2"):
        PathRegularizer(lambda1=0.004, lambda2=0.005)
    PathRegularizer(lambda1=0.0, lambda2=0.0)  # ablation without the group terms
    with pytest.raises(DnasError, match="variant"):
        PathRegularizer(variant="other")


def test_regularizer_with_softmax_uses_the_activated_weights():
    problem, _ = _problem("nb201", Softmax())
    terms = PathRegularizer()(problem, problem.activated())
    assert _f(terms["pr.skip"]) == pytest.approx(0.01 * 0.2, rel=1e-5)
    assert _f(terms["pr.path"]) == pytest.approx(-0.005 * 0.4**3, rel=1e-5)


# ----- derivation ----------------------------------------------------------------------------------------
def _darts_beta(entries):
    beta = torch.full((14, 8), -6.0)
    beta[:, 0] = 8.0  # none strongest everywhere: both rules must ignore it
    for (e, op), value in entries.items():
        beta[e, DARTS_OPS.index(op)] = value
    return beta


def test_paper_and_code_rules_on_a_hand_made_beta():
    space = get_space("darts")
    act = HardConcrete(tau_max=0.1)
    act.tau = 0.1
    # node 2 (edges 0: 0->2, 1: 1->2): two strong ops on edge 0, one on edge 1
    beta = _darts_beta({(0, "sep_conv_3x3"): 2.0, (0, "dil_conv_3x3"): 1.99, (1, "sep_conv_5x5"): 1.9,
                        (2, "skip_connect"): 1.0, (4, "dil_conv_5x5"): 1.5, (3, "avg_pool_3x3"): 0.5,
                        (0, "none"): -6.0, (1, "none"): -6.0})
    strengths = {"normal": act.strength(beta, "normal"), "reduce": act.strength(beta, "reduce")}
    paper = PaperRule()(space, strengths)
    code = CodeRule()(space, strengths)
    # paper: ranked by P across the node's edges -> both pairs from input 0
    assert paper.cells["normal"][:2] == (("sep_conv_3x3", 0), ("dil_conv_3x3", 0))
    # code: per-edge softmax, edge 0's share is split between its two strong ops
    assert code.cells["normal"][:2] == (("sep_conv_5x5", 1), ("sep_conv_3x3", 0))
    # node 3 (edges 2, 3, 4): dil5 from node 2, then skip from input 0
    assert paper.cells["normal"][2:4] == (("dil_conv_5x5", 2), ("skip_connect", 0))
    assert all(op != "none" for op, _ in paper.cells["normal"] + code.cells["normal"])
    assert paper.concat["normal"] == (2, 3, 4, 5)
    # the code rule's scores are the per-edge softmax of beta
    torch.testing.assert_close(CodeRule().scores(strengths["normal"]), torch.softmax(beta.double(), -1),
                               rtol=1e-4, atol=1e-7)


def test_rules_on_nb201_pick_the_arg_max_per_edge():
    space = get_space("nb201")
    act = HardConcrete(tau_max=0.1)
    beta = torch.full((6, 5), -3.0)
    arch = ["nor_conv_3x3", "skip_connect", "none", "nor_conv_1x1", "avg_pool_3x3", "nor_conv_3x3"]
    for e, op in enumerate(arch):
        beta[e, NB201_OPS.index(op)] = 2.0
    strengths = {"cell": act.strength(beta, "cell")}
    for rule in (PaperRule(), CodeRule()):
        assert [op for op, _ in rule(space, strengths).cells["cell"]] == arch


# ----- presets and end-to-end ----------------------------------------------------------------------------
def test_presets_are_listed_and_resolve():
    assert {"pr-darts", "pr-darts-code"} <= set(METHODS.names())
    paper = resolve_config({"space": "darts", "method": "pr-darts"})
    assert paper.activation.name == "hard-concrete" and paper.activation.params["tau_max"] == 10.0
    assert paper.activation.params["init_mean"] == 0.5 and paper.discretizer.name == "pr-darts"
    assert paper.arch_regularizers[0].params == {"lambda1": 0.01, "lambda2": 0.005, "lambda3": 0.005,
                                                 "variant": "paper", "hinge": 0.2}
    assert paper.estimator.name == "first-order" and paper.batch_size == 128 and paper.epochs == 200
    code = resolve_config({"space": "darts", "method": "pr-darts-code"})
    assert code.activation.params["tau_max"] == 1.0 and code.activation.params["straight_through"]
    assert code.arch_regularizers[0].params["variant"] == "code" and code.discretizer.name == "pr-darts-code"
    assert code.layers == 6 and code.batch_size == 250
    assert resolve_config({"space": "nb201", "method": "pr-darts-code"}).layers is None
    combined = resolve_config({"space": "nb201", "method": "darts"}, ["arch_regularizers=pr-darts"])
    assert combined.activation.name == "softmax" and combined.arch_regularizers[0].name == "pr-darts"


def _search(tiny_search, space, name="run", extra=(), method="pr-darts"):
    layers = ["layers=3"] if space != "nb201" else []
    search = tiny_search(method, space=space, epochs=3, name=name,
                         overrides=[FEW, *layers, "activation.tau_max=1.0", *extra])
    return search, search.run()


def _lines(path):
    return read_metrics(path)


@pytest.mark.parametrize("space,method", [("nb201", "pr-darts"), ("darts", "pr-darts"), ("nb201", "pr-darts-code")])
def test_pr_darts_search_logs_temperature_terms_and_active_gates(tiny_search, tmp_path, space, method):
    search, genotype = _search(tiny_search, space, method=method)
    steps = [r for r in _lines(tmp_path / "run") if r["kind"] == "step"]
    for t in search.algorithm.space.cell_types:
        assert all(0 < r[f"activation.active.{t}"] <= 2 * 14 for r in steps)
    assert sorted({r["activation.tau"] for r in steps}) == pytest.approx([0.1, 0.55, 1.0])
    for term in ("skip", "nonskip", "path"):
        assert all(f"arch_regularizers.0.{term}" in r for r in steps)
    assert all(r["arch_regularizers.0.path"] <= 0 < r["arch_regularizers.0.skip"] for r in steps)
    assert any(r["arch_regularizers.0.path"] < 0 for r in steps)
    if space == "darts":
        assert len(genotype.cells["normal"]) == 8 and len(genotype.cells["reduce"]) == 8
    else:
        assert genotype.arch_str.count("~") == 6


def test_resume_restores_temperature_and_gate_state(tiny_search, interrupt_at, tmp_path):
    ref, g_ref = _search(tiny_search, "nb201", "ref", ["checkpoint_every=3"])
    interrupt_at(Search, 5)  # after the second step of the second epoch
    with pytest.raises(DnasError, match="interrupted"):
        _search(tiny_search, "nb201", "resumed", ["checkpoint_every=3"])
    interrupt_at(Search, None)
    state = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 1 and state["step"] > 0
    assert state["components"]["activation"]["tau"] == pytest.approx(0.55)
    assert set(state["components"]["arch_regularizers.0"]["last"]) >= {"skip", "nonskip", "path"}

    restored = Search(ref.cfg, tmp_path / "resumed", progress=False).open()
    assert restored.algorithm.activation.tau == pytest.approx(0.55)
    assert restored.algorithm.activation.active == state["components"]["activation"]["active"]
    restored.close()

    resumed, g_res = _search(tiny_search, "nb201", "resumed", ["checkpoint_every=3"])
    assert g_res == g_ref and resumed.algorithm.activation.tau == 0.1
    assert torch.equal(resumed.problem.alphas["cell"], ref.problem.alphas["cell"])

    def strip(lines):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in lines]

    assert strip(_lines(tmp_path / "resumed")) == strip(_lines(tmp_path / "ref"))


def test_cli_search_with_the_pr_darts_method(tmp_path, tiny, capsys):
    from dnas.cli import main

    out = tmp_path / "cli"
    code = main(["search", "--quiet", "--space", "nb201", "--method", "pr-darts", "--epochs", "2", "--batch-size", "16",
                 "--out", str(out), *tiny, FEW])
    assert code == 0 and "nb201 cell:" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert results["steps"] == 6 and "skip_connect" in results
    assert any("activation.tau" in r for r in _lines(out))


# ----- the official code, transcribed independently ---------------------------------------------------
# salesforce/PR-DARTS search_model_prdarts_nasnet.py orders the ops as AutoDL's DARTS_SPACE; dnas as DARTS
OFFICIAL_OPS = ["none", "skip_connect", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5",
                "avg_pool_3x3", "max_pool_3x3"]
TO_OFFICIAL = [DARTS_OPS.index(op) for op in OFFICIAL_OPS]  # official column c holds dnas column TO_OFFICIAL[c]
CHAIN = [1, 4, 8, 13]  # '0<-1', '1<-2', '2<-3', '3<-4' among the sorted edge keys '0<-0', '0<-1', '1<-0', ...


def official_regularizer(betas, selections, tau, lambdas=(0.01, 0.005, 0.005), threshold=0.2, a=-0.1, b=1.1):
    """get_regularization() of the official code, restated: betas/selections in its op order."""
    shift = tau * math.log(-a / b)

    def group_mean(p, sel, cols):  # mean P over the selected entries of the columns, 0 if none is selected
        count = sel[:, cols].sum()
        return (p * sel)[:, cols].sum() / count if count > 0 else 0.0

    skip = nonskip = pool = path = 0.0
    for beta, sel in zip(betas, selections, strict=True):  # normal, reduce: each weighs one half
        p = torch.sigmoid(beta - shift)
        skip = skip + 0.5 * group_mean(p, sel, [1])
        pool = pool + 0.5 * group_mean(p, sel, [6, 7])
        nonskip = nonskip + 0.5 * group_mean(p, sel, [0, 2, 3, 4, 5])
        factors = [(p * sel)[e, 2:6].sum() / sel[e, 2:6].sum() for e in CHAIN if sel[e, 2:6].sum() > 0]
        path = path + 0.5 * (torch.stack(factors).prod() if factors else 0.0)

    def hinge(v):
        return v - threshold if v > threshold else 0.0

    return lambdas[0] * hinge(skip) + lambdas[1] * (hinge(nonskip) + hinge(pool)) - lambdas[2] * path


def official_genotype(beta):
    """genotype()._parse(softmax(beta)) of the official code: per node the two strongest (op, input)
    pairs over all incoming edges, none excluded, by the per-edge softmax."""
    w = torch.softmax(beta, dim=-1)
    gene, start = [], 0
    for node in range(4):
        pairs = [(float(w[start + j, k]), OFFICIAL_OPS[k], j) for j in range(2 + node) for k in range(8)
                 if OFFICIAL_OPS[k] != "none"]
        gene += [(op, j) for _, op, j in sorted(pairs, key=lambda t: -t[0])[:2]]
        start += 2 + node
    return tuple(gene)


@pytest.mark.parametrize("seed", range(6))
def test_code_variant_and_rule_match_the_official_code_on_random_beta(seed):
    g = torch.Generator().manual_seed(seed)
    tau = [1.0, 0.55, 0.1][seed % 3]
    act = HardConcrete(tau_max=tau)
    problem, space = _problem("darts", act)
    betas = {t: 2.0 * torch.randn(14, 8, generator=g, dtype=torch.float64) for t in ("normal", "reduce")}
    selections = {}
    for t in betas:
        sel = torch.zeros(14, 8, dtype=torch.float64)
        for e in range(14):  # two ops per edge, sometimes none of the convs of a chain edge
            sel[e, torch.randperm(8, generator=g)[:2]] = 1.0
        selections[t] = sel
    leaves = {t: b.clone().requires_grad_(True) for t, b in betas.items()}
    problem.alphas = leaves  # the regularizer reads P from the problem's alphas
    ours = sum(PathRegularizer(variant="code", hinge=0.2)(problem, selections).values())
    theirs_in = {t: b.clone().requires_grad_(True) for t, b in betas.items()}
    theirs = official_regularizer([theirs_in[t][:, TO_OFFICIAL] for t in ("normal", "reduce")],
                                  [selections[t][:, TO_OFFICIAL] for t in ("normal", "reduce")], tau)
    assert float(ours.detach()) == pytest.approx(float(theirs.detach()), rel=1e-12, abs=1e-15)
    ours.backward()
    theirs.backward()
    for t in betas:
        torch.testing.assert_close(leaves[t].grad, theirs_in[t].grad, rtol=1e-10, atol=1e-15)
    strengths = {t: act.strength(b, t) for t, b in betas.items()}
    genotype = CodeRule()(space, strengths)
    for t in betas:
        assert genotype.cells[t] == official_genotype(betas[t][:, TO_OFFICIAL])


def test_drop_prob_makes_a_sure_op_lose_its_slot_at_the_official_rate():
    """One op whose gate is always 1, four always 0, top-1: without the drop the sure op always wins;
    with drop p it wins unless dropped, or when dropped by the uniform tie-break among the other
    undropped ops: P = (1-p) + p E[1/(1+N)], N ~ Bin(4, 1-p), E[1/(1+N)] = (1 - p^5) / (5 (1-p))."""
    torch.manual_seed(0)
    beta = torch.full((20_000, 5), -30.0)
    beta[:, 0] = 30.0
    for p in (0.0, 0.4):
        act = HardConcrete(tau_max=1.0, top_k=1, drop_prob=p)
        won = (act(beta, "cell")[:, 0] != 0).double().mean().item()
        expected = 1.0 if p == 0 else (1 - p) + p * (1 - p**5) / (5 * (1 - p))
        assert won == pytest.approx(expected, abs=0.01)  # 0.732 at p = 0.4


def test_paper_preset_at_its_temperature_of_ten(tiny_search, tmp_path):
    """The pr-darts preset as published (tau 10 -> 0.1, beta_0 = 0.5): at tau = 10 every gate opens with
    P = sigmoid(0.5 + 24) ~ 1, so the path term is the sum of P over the 2 parameterised ops of each of
    the 3 chain edges, (2 P)^3 = 8 (equation (8); the official code's mean would give 1), and
    its gradient is ~2e-11 per entry: the first epochs are driven by the cross-entropy alone."""
    search = tiny_search("pr-darts", epochs=3, overrides=[FEW])
    assert search.cfg.activation.params["tau_max"] == 10.0 and search.cfg.activation.params["init_mean"] == 0.5
    search.run()
    steps = [r for r in _lines(tmp_path / "run") if r["kind"] == "step"]
    assert sorted({r["activation.tau"] for r in steps}) == pytest.approx([0.1, 5.05, 10.0])
    first = steps[0]
    assert first["activation.tau"] == 10.0
    assert first["arch_regularizers.0.raw.path"] == pytest.approx(8.0, rel=1e-9)
    assert first["arch_regularizers.0.raw.skip"] == pytest.approx(1.0, rel=1e-9)
    act = HardConcrete(tau_max=10.0)
    beta = torch.full((6, 5), 0.5, requires_grad=True)
    reg_grad = torch.autograd.grad(act.probability(beta).sum(), beta)[0]  # float32 sigmoid: exactly 0
    assert float(reg_grad.max()) == pytest.approx(math.exp(-(0.5 + 10 * math.log(11))), rel=1e-3)  # ~2.4e-11
    assert search.algorithm.activation.tau == 0.1 and search.problem.strengths()["cell"].dtype == torch.float64
