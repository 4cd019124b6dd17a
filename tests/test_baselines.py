"""The baselines as components: each does what its paper says it does, against transcriptions of the
official code where the official code defines a formula, and combines with the remedies' components."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

import dnas
from dnas.bilevel.problem import BilevelProblem, StepContext
from dnas.bilevel.run import Search
from dnas.bilevel.step import SearchStep
from dnas.components.activations import Softmax
from dnas.components.auxiliary import AuxiliarySkip
from dnas.components.beta_darts import BetaDecay
from dnas.components.fair_darts import Sigmoid, ThresholdRule, ZeroOneLoss
from dnas.components.gdas import GdasRule, GumbelOneHot, gumbel_one_hot
from dnas.components.sdarts import AdversarialSmoothing, RandomSmoothing, clip_rows
from dnas.config.resolve import resolve_config
from dnas.errors import DnasError
from dnas.retrain.network import build_eval_network
from dnas.runtime.files import read_metrics
from dnas.spaces import get_space
from dnas.supernet import build_supernet
from dnas.supernet import kinds as fused_kinds

NB201 = get_space("nb201")


# ----- GDAS -------------------------------------------------------------------------------------------
def test_gumbel_sample_is_one_hot_forward_and_softmax_backward():
    torch.manual_seed(0)
    alpha = torch.randn(6, 5, requires_grad=True)
    h = gumbel_one_hot(alpha, tau=0.7)
    assert ((h == 0) | (h == h.max(dim=1, keepdim=True).values)).all()
    assert (h != 0).sum(dim=1).tolist() == [1] * 6 and torch.allclose(h.sum(dim=1), torch.ones(6))
    # straight through: h - p is a constant, so h's gradient is that of p = softmax((log_softmax(a) + g) / tau)
    weights = torch.randn(6, 5)
    (g,) = torch.autograd.grad((h * weights).sum(), alpha)
    assert g.abs().sum() > 0 and torch.allclose(g.sum(dim=1), torch.zeros(6), atol=1e-6)


def test_gumbel_samples_follow_the_softmax_of_alpha():
    """Gumbel-max: argmax(log p + g) is drawn with probability p, whatever the (positive) temperature."""
    alpha = torch.tensor([[0.0, 1.0, -1.0, 0.5, 2.0]]).repeat(20000, 1)
    torch.manual_seed(0)
    counts = gumbel_one_hot(alpha, tau=10.0).detach().sum(dim=0) / 20000
    assert torch.allclose(counts, alpha[0].softmax(dim=0), atol=0.015)


def _count_members(monkeypatch) -> list[int]:
    """Patch every fused op kind to count the (edge, op) pairs it computes per call."""
    counted: list[int] = []
    for cls in (fused_kinds.SharedIdentity, fused_kinds.SharedPool, fused_kinds.FusedReLUConvBN,
                fused_kinds.FusedSepConv, fused_kinds.FusedDilConv, fused_kinds.FusedFactorizedReduce,
                fused_kinds.FusedNoise):
        forward = cls.forward

        def counting(self, inp, sel, forward=forward):
            counted.append(self.n if sel is None else len(sel))
            return forward(self, inp, sel)

        monkeypatch.setattr(cls, "forward", counting)
    return counted


@pytest.mark.parametrize("space_name,layers", [("nb201", 1), ("darts", 3)])
def test_gdas_runs_one_op_per_edge(monkeypatch, space_name, layers):
    space = get_space(space_name)
    torch.manual_seed(0)
    net = build_supernet(space, num_classes=3, in_channels=3, channels=4, layers=layers)
    activation = GumbelOneHot()
    activation.bind(space)
    alphas = nn.ParameterDict({t: nn.Parameter(torch.zeros(s)) for t, s in space.alpha_shapes().items()})
    problem = BilevelProblem(net, alphas, activation)
    counted = _count_members(monkeypatch)
    x = torch.randn(2, 3, 8, 8)
    for _ in range(3):
        counted.clear()
        activated = problem.activated()
        problem.forward(x, activated)
        # one op per edge in every cell; `none` is never computed
        expected = sum(len(net.cells_of_type(t)) * sum(space.cells[t].edge_ops[e][int(k)] != "none"
                                                       for e, k in enumerate(a.argmax(dim=1)))
                       for t, a in activated.items())
        assert sum(counted) == expected
    counted.clear()
    softmax = BilevelProblem(net, alphas, Softmax())
    softmax.forward(x, softmax.activated())
    edges = sum(len(net.cells_of_type(t)) * space.cells[t].num_edges for t in alphas)
    assert sum(counted) > edges  # the softmax computes every op of every edge


def test_gdas_rule_keeps_the_two_strongest_pairs_per_node():
    topo = get_space("darts").cells["normal"]
    w = torch.zeros(topo.num_edges, topo.ops_per_edge)
    # node 2 (edges 0, 1): the two best pairs both come from input 0
    w[0, 3], w[0, 4], w[1, 2] = 0.9, 0.8, 0.7
    w[0, 0] = 5.0  # none never counts
    genotype = GdasRule()(get_space("darts"), {"normal": w, "reduce": w})
    ops = topo.edge_ops[0]
    assert genotype.cells["normal"][:2] == ((ops[3], 0), (ops[4], 0))


def test_gdas_preset_anneals_and_is_cheaper_than_darts(tiny_search, tmp_path):
    search = tiny_search("gdas", epochs=3, overrides=["max_images=96", "log_every=1"])
    assert search.cfg.activation.name == "gumbel" and search.cfg.epochs == 3
    search.run()
    taus = sorted({r["activation.tau"] for r in read_metrics(tmp_path / "run", "step")})
    assert taus == pytest.approx([0.1, 5.05, 10.0])
    cfg = resolve_config({"space": "darts", "method": "gdas"})
    assert (cfg.discretizer.name, cfg.layers, cfg.batch_size, cfg.schedule.params["order"]) == (
        "gdas", 6, 256, "weight-first")


# ----- beta-DARTS -------------------------------------------------------------------------------------
def official_mlc_loss(arch_param: torch.Tensor) -> torch.Tensor:
    """Sunshine-Ye/Beta-DARTS optimizers/darts/architect.py ``mlc_loss``, transcribed."""
    return torch.logsumexp(arch_param, dim=-1).mean()


def test_beta_decay_is_the_official_loss_with_its_ramp():
    torch.manual_seed(0)
    alpha = nn.Parameter(torch.randn(6, 5))
    problem = BilevelProblem(None, nn.ParameterDict({"cell": alpha}), Softmax())  # type: ignore[arg-type]
    reg = BetaDecay()
    for epoch in (0, 7, 99):
        term = reg(problem, {}, StepContext(epoch=epoch, epochs=100))["beta-decay"]
        official = (0 + 50 * epoch / 100) * official_mlc_loss(alpha)  # _backward_step's lambda, hard-coded
        assert torch.allclose(term, official)
    (grad,) = torch.autograd.grad(reg(problem, {}, StepContext(epoch=40, epochs=100))["beta-decay"], alpha)
    assert torch.allclose(grad, 20.0 * alpha.softmax(dim=-1) / 6)  # each logit decays by its softmax weight


def test_beta_decay_keeps_the_weights_from_concentrating(tiny_search):
    """At the same seed, beta-decay ends with flatter op weights (larger entropy) than plain DARTS."""
    overrides = ["max_images=96", "a_lr=0.05"]
    plain = tiny_search("darts", epochs=3, name="plain", overrides=overrides)
    plain.run()
    decayed = tiny_search("darts", epochs=3, name="decayed", overrides=[
        *overrides, "arch_regularizers=beta-decay", "arch_regularizers.beta-decay.ramp_epochs=1"])
    decayed.run()
    entropy = [json.loads((s.out / "results.json").read_text())["entropy"]["cell"] for s in (plain, decayed)]
    assert entropy[1] > entropy[0]
    assert resolve_config({"method": "beta-darts"}).arch_regularizers[0].params == {"lam": 50.0, "ramp_epochs": 100}


def test_baselines_combine_with_the_remedies(tiny_search):
    """GDAS sampling under Lambda-DARTS' regularizer; beta-decay with the amended estimator."""
    tiny_search("gdas", overrides=["max_images=96", "weight_regularizers=lambda"]).run()
    combined = tiny_search("beta-darts", name="amended", overrides=[
        "max_images=96", "estimator=amended", "estimator.hvp=fd"])
    combined.run()
    assert combined.cfg.estimator.name == "amended" and combined.cfg.arch_regularizers[0].name == "beta-decay"
    minus = tiny_search("darts-minus", name="minus-prime", overrides=["max_images=96", "activation=clamp",
                                                                    "arch_regularizers=prox"])
    minus.run()  # DARTS-'s auxiliary skip under DARTS-PRIME's clamp activation and proximity term
    partial = tiny_search("pc-darts", name="pc-pr", overrides=["max_images=96", "warmup_epochs=0",
                                                             "activation=hard-concrete", "arch_regularizers=pr-darts"])
    partial.run()  # PC-DARTS' partial channels and edge weights under PR-DARTS' gates and regularizer
    assert partial.algorithm.arch_steps > 0 and partial.algorithm.problem.edge_alphas is not None


def test_gumbel_temperatures_are_checked():
    with pytest.raises(DnasError, match="tau_min"):
        GumbelOneHot(tau_max=0.1, tau_min=1.0)
    assert math.isclose(GumbelOneHot().tau_at(249, 250), 0.1)


# ----- SDARTS -----------------------------------------------------------------------------------------
def official_clip(weights: torch.Tensor) -> torch.Tensor:
    """xiangning-chen/SmoothDARTS sota/cnn/model_search.py ``Network.clip``, transcribed (row by row, in place)."""
    weights = weights.clone()
    for line in weights:
        max_index = line.argmax()
        line.clamp_(0, 1)
        if line.sum() == 0.0:
            line[max_index] = 1.0
        line.div_(line.sum())
    return weights


def test_clip_rows_is_the_official_clip():
    torch.manual_seed(0)
    a = torch.randn(14, 8) * 0.7
    a[3] = -torch.rand(8)  # a row clipped to zeros
    assert torch.allclose(clip_rows(a), official_clip(a))


def _supernet_problem(space_name="nb201", layers=1):
    space = get_space(space_name)
    torch.manual_seed(0)
    net = build_supernet(space, num_classes=3, in_channels=3, channels=4, layers=layers)
    alphas = nn.ParameterDict({t: nn.Parameter(0.5 * torch.randn(s)) for t, s in space.alpha_shapes().items()})
    activation = Softmax()
    activation.bind(space)
    batch = (torch.randn(8, 3, 8, 8), torch.randint(0, 3, (8,)))
    return BilevelProblem(net, alphas, activation), batch


def test_random_smoothing_stays_on_the_simplex_within_its_radius():
    problem, batch = _supernet_problem()
    rs = RandomSmoothing()
    ctx = StepContext(epoch=5, epochs=10)
    assert rs.radius(ctx) == pytest.approx(0.03 + 0.27 * 0.5)
    clean = {t: a.detach() for t, a in problem.activated().items()}
    out = rs(problem, clean, batch, ctx)
    for t in clean:
        assert torch.allclose(out[t].sum(dim=1), torch.ones(len(out[t]))) and (out[t] >= 0).all()
        assert not torch.equal(out[t], clean[t])


def test_the_attack_raises_the_training_loss_and_leaves_no_trace():
    problem, batch = _supernet_problem()
    adv = AdversarialSmoothing()
    ctx = StepContext(epoch=9, epochs=10)
    clean = {t: a.detach() for t, a in problem.activated().items()}
    state = {k: v.clone() for k, v in problem.net.state_dict().items()}
    torch.manual_seed(1)
    attacked = adv(problem, clean, batch, ctx)
    with torch.no_grad():
        problem.net.eval()
        before, after = problem.loss(batch, clean)[0], problem.loss(batch, attacked)[0]
        problem.net.train()
    assert after > before and float(adv.metrics()["gain"]) > 0
    assert all((attacked[t] - clean[t]).abs().max() <= 2 * adv.radius(ctx) for t in clean)
    assert all(torch.equal(v, state[k]) for k, v in problem.net.state_dict().items())
    assert problem.net.training and all(p.grad is None for p in problem.weights)


def test_sdarts_presets_perturb_only_the_weight_step(tiny_search, monkeypatch):
    phase: list[str] = []
    seen: list[tuple[str, bool, bool]] = []  # (step, trained under clean weights, the step's training forward)
    for name in ("arch_step", "weight_step"):
        method = getattr(SearchStep, name)

        def tagged(self, *args, method=method, name=name, **kwargs):
            phase.append(name)
            try:
                return method(self, *args, **kwargs)
            finally:
                phase.pop()

        monkeypatch.setattr(SearchStep, name, tagged)
    loss = BilevelProblem.loss

    def record(self, batch, activated=None, cell_weights=None):
        if activated is not None and phase:
            clean = all(torch.allclose(a, self.activation(self.alphas[t], t)) for t, a in activated.items())
            seen.append((phase[-1], clean, cell_weights is not None))
        return loss(self, batch, activated, cell_weights)

    monkeypatch.setattr(BilevelProblem, "loss", record)
    for method in ("sdarts-rs", "sdarts-adv"):
        seen.clear()
        search = tiny_search(method, name=method, overrides=["max_images=96"])
        assert search.cfg.perturbation.name == {"sdarts-rs": "random", "sdarts-adv": "pgd"}[method]
        search.run()
        assert all(clean for step, clean, _ in seen if step == "arch_step")
        trained = [clean for step, clean, training in seen if step == "weight_step" and training]
        assert trained and not any(trained)
    assert resolve_config({"space": "darts", "method": "sdarts-rs"}).activation.params["exclude"] == "none"
    with pytest.raises(DnasError, match="simplex"):
        tiny_search("pr-darts", name="gates", overrides=["max_images=96", "perturbation=random"]).run()


# ----- Fair DARTS -------------------------------------------------------------------------------------
def official_zero_one(alphas: list[torch.Tensor], weight: float = 10.0) -> torch.Tensor:
    """xiaomi-automl/FairDARTS fairdarts/separate_loss.py ``ConvSeparateLoss`` without the cross-entropy:
    ``weight * -F.mse_loss(sigmoid_all, 0.5)`` over the normal and reduction weights concatenated."""
    sigmoid_all = torch.sigmoid(torch.cat(alphas, dim=0))
    return weight * -torch.nn.functional.mse_loss(sigmoid_all, 0.5 * torch.ones_like(sigmoid_all))


def test_zero_one_loss_is_the_official_one_and_pushes_away_from_a_half():
    space = get_space("darts")
    torch.manual_seed(0)
    alphas = nn.ParameterDict({t: nn.Parameter(torch.randn(14, 8)) for t in ("normal", "reduce")})
    activation = Sigmoid()
    activation.bind(space)
    problem = BilevelProblem(None, alphas, activation)  # type: ignore[arg-type]
    term = ZeroOneLoss()(problem, {})["zero-one"]
    assert torch.allclose(term, official_zero_one([alphas["normal"], alphas["reduce"]]))
    (grad,) = torch.autograd.grad(term, alphas["normal"])
    assert ((grad * alphas["normal"]) <= 0).all()  # descending it moves every logit away from 0 (sigmoid 1/2)


def test_threshold_rule_keeps_strong_edges_and_drops_isolated_nodes():
    space = get_space("darts")
    topo = space.cells["normal"]
    w = torch.full((topo.num_edges, topo.ops_per_edge), 0.5)
    w[0, 4] = 0.9  # node 2: one edge from input 0 passes the threshold
    # node 3 (edges 2-4): nothing passes; node 4 (edges 5-8): an edge from node 3 (isolated) and one from input 1
    w[topo.edge_index(3, 4), 3] = 0.95
    w[topo.edge_index(1, 4), 5] = 0.9
    # node 5 (edges 9-13): an edge from node 2 (live)
    w[topo.edge_index(2, 5), 6] = 0.99
    genotype = ThresholdRule()(space, {"normal": w, "reduce": w})
    pairs = genotype.cells["normal"]
    ops = topo.edge_ops[0]
    assert pairs[0] == (ops[4], 0) and pairs[1][0] == "none"
    assert pairs[2][0] == pairs[3][0] == "none"  # node 3 is isolated
    assert (ops[3], 3) in pairs[4:6] and (ops[5], 1) in pairs[4:6]  # node 4 keeps both; the one from 3 is void
    assert genotype.concat["normal"] == (2, 4, 5)
    net = build_eval_network(genotype, num_classes=10, channels=4, layers=3)
    logits, _ = net(torch.randn(2, 3, 8, 8))
    assert logits.shape == (2, 10)
    cell = net.cells[0]  # computed: (op, 0) -> 2, (op, 1) -> 4, (op, 2) -> 5; (op, 3) -> 4 reads the isolated node 3
    assert len(cell.ops) == 3 and cell.out_channels == 3 * 4


def test_fair_darts_searches_and_its_cell_trains(tiny_search, tmp_path):
    search = tiny_search("fair-darts", space="darts", overrides=["layers=3", "max_images=96",
                                                                  "discretizer.threshold=0.5"])
    assert search.cfg.activation.params["exclude"] == "none" and search.cfg.discretizer.name == "fair-darts"
    genotype = search.run()
    weights = search.problem.strengths()["normal"]
    assert not torch.allclose(weights.sum(dim=1), torch.ones(14))  # independent weights, not a softmax
    trained = dnas.train(genotype, dataset="digits", epochs=1, channels=4, layers=3, batch_size=32, max_images=64,
                         max_test_images=32, out=tmp_path / "train")
    assert 0 <= trained.result["test_acc"] <= 1


# ----- DARTS- ---------------------------------------------------------------------------------------
def official_decay(decay: str, epoch: int, base: float = 1.0, t_max: int = 50, t_start: int = 0,
                   t_stop: int = 50, last: float = 1.0) -> float:
    """Meituan-AutoML/DARTS- src/utils.py ``DecayScheduler.step``, transcribed."""
    if not t_start <= epoch <= t_stop:
        return last
    if decay == "linear":
        return base * (t_max - epoch) / (t_max - t_start)
    if decay == "cosine":
        return base * (1 + math.cos(math.pi * epoch / (t_max - t_start))) / 2
    if decay == "slow-cosine":
        return base * math.cos(math.pi / 2 * epoch / (t_max - t_start))
    return base


@pytest.mark.parametrize("decay", ["linear", "cosine", "slow-cosine", "constant"])
def test_auxiliary_coefficient_is_the_official_decay_scheduler(decay):
    aux = AuxiliarySkip(beta=0.8, decay=decay)
    for epoch in range(50):
        aux.on_epoch_start(epoch, 50)
        assert aux.coefficient() == pytest.approx(official_decay(decay, epoch, base=0.8))
    shorter = AuxiliarySkip(decay=decay, decay_epochs=10)  # --decay_max_epoch 10 --decay_stop_epoch 10
    last = 1.0
    for epoch in range(20):
        last = official_decay(decay, epoch, t_max=10, t_stop=10, last=last)
        assert shorter.coefficient_at(epoch, 20) == pytest.approx(last)
    with pytest.raises(DnasError, match="decay one of"):
        AuxiliarySkip(decay="exponential")


@pytest.mark.parametrize("space_name,layers", [("darts", 3), ("nb201", 1)])
def test_the_auxiliary_skip_at_zero_is_the_plain_supernet(space_name, layers):
    """DARTS-'s branch is added outside the mixing: at coefficient 0 the supernet computes exactly what
    the supernet without it computes; at 0.5 it adds to every edge (the reduction edges' factorized
    reductions included)."""
    space = get_space(space_name)
    torch.manual_seed(0)
    plain = build_supernet(space, num_classes=5, in_channels=3, channels=4, layers=layers).double()
    aux = build_supernet(space, num_classes=5, in_channels=3, channels=4, layers=layers, aux_skip=True).double()
    missing, unexpected = aux.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all("aux" in name for name in missing)
    assert bool(missing) == (space_name == "darts")  # only reduction edges give the branch weights
    weights = [torch.softmax(torch.randn(c.num_edges, len(c.edge_ops[0]), dtype=torch.float64), dim=-1)
               for c in (space.cells[t] for t in plain.cell_types)]
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    aux.set_aux_skip(0.0)
    torch.testing.assert_close(aux(x, weights), plain(x, weights), rtol=0, atol=0)
    aux.set_aux_skip(0.5)
    assert not torch.allclose(aux(x, weights), plain(x, weights))


def test_darts_minus_decays_the_skip_and_derives_from_the_candidates_alone(tiny_search, tmp_path):
    search = tiny_search("darts-minus", epochs=3, overrides=["max_images=96", "log_every=1"])
    genotype = search.run()
    betas = sorted({r["auxiliary.beta"] for r in read_metrics(tmp_path / "run", "step")})
    assert betas == pytest.approx([1 / 3, 2 / 3, 1.0])  # linear from 1, over the search's 3 epochs
    ops = set(get_space("nb201").cells["cell"].edge_ops[0])
    assert {op for op, _ in genotype.cells["cell"]} <= ops
    cfg = resolve_config({"space": "darts", "method": "darts-minus"})
    assert "none" in get_space("darts").cells["normal"].edge_ops[0] and cfg.activation.params["exclude"] == ""


# ----- PC-DARTS -------------------------------------------------------------------------------------
def official_edge_weights(betas: torch.Tensor, steps: int = 4) -> torch.Tensor:
    """yuhuixu1993/PC-DARTS model_search.py ``Network.forward``: the betas' softmax node by node, transcribed."""
    n, start = 3, 2
    weights2 = torch.softmax(betas[0:2], dim=-1)
    for _ in range(steps - 1):
        end = start + n
        weights2 = torch.cat([weights2, torch.softmax(betas[start:end], dim=-1)], dim=0)
        start, n = end, n + 1
    return weights2


def official_pc_parse(weights: torch.Tensor, weights2: torch.Tensor, primitives: list[str],
                      steps: int = 4) -> list[tuple[str, int]]:
    """PC-DARTS ``genotype()._parse`` on the op weights times the edge weights, transcribed."""
    none = primitives.index("none")
    gene, n, start = [], 2, 0
    for _ in range(steps):
        end = start + n
        W = weights[start:end].clone()
        for j in range(n):
            W[j, :] = W[j, :] * weights2[start + j]
        edges = sorted(range(n), key=lambda x: -max(W[x][k] for k in range(len(W[x])) if k != none))[:2]
        for j in edges:
            k_best = None
            for k in range(len(W[j])):
                if k != none and (k_best is None or W[j][k] > W[j][k_best]):
                    k_best = k
            gene.append((primitives[k_best], j))
        start, n = end, n + 1
    return gene


def test_edge_normalization_and_derivation_are_pc_darts_official(tiny_search):
    search = tiny_search("pc-darts", space="darts", overrides=["layers=3", "channels=8", "max_images=64",
                                                                             "warmup_epochs=0"])
    search.open()
    try:
        problem = search.algorithm.problem
        with torch.no_grad():
            for p in problem.arch:
                p.normal_()
        genotype = search.algorithm.genotype()
        primitives = list(get_space("darts").cells["normal"].edge_ops[0])
        for t, logits in problem.edge_alphas.items():
            weights2 = official_edge_weights(logits.detach())
            torch.testing.assert_close(problem.edge_weights()[t], weights2)
            assert list(genotype.cells[t]) == official_pc_parse(problem.alphas[t].detach().softmax(dim=-1),
                                                                weights2, primitives)
    finally:
        search.close()


def test_pc_darts_trains_the_weights_alone_during_the_warm_up(tiny_search, tmp_path):
    search = tiny_search("pc-darts", epochs=2, overrides=["max_images=64", "warmup_epochs=1"])
    search.open()
    try:
        initial = [p.detach().clone() for p in search.algorithm.problem.arch]
        weights = [p.detach().clone() for p in search.algorithm.problem.weights]
        while search.position.epoch < 1:
            search.step()
        assert all(torch.equal(a, b) for a, b in zip(initial, search.algorithm.problem.arch, strict=True))
        assert not all(torch.equal(a, b) for a, b in zip(weights, search.algorithm.problem.weights, strict=True))
        while not search.done:
            search.step()
        search.finish()
    finally:
        search.close()
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["arch_steps"] == results["steps"] // 2  # the second epoch's steps alone
    edge_logits = search.algorithm.problem.edge_alphas["cell"]
    assert not torch.equal(edge_logits, initial[-1])  # the edge weights are learned with the alphas
    with pytest.raises(DnasError, match="warmup_epochs must lie"):
        resolve_config({"method": "pc-darts", "epochs": 10})


def test_pc_darts_ops_see_a_quarter_of_the_channels():
    space = get_space("darts")
    full = build_supernet(space, num_classes=10, in_channels=3, channels=16, layers=8)
    partial = build_supernet(space, num_classes=10, in_channels=3, channels=16, layers=8, partial=4)
    count = [sum(p.numel() for c in net.node_cells() for p in c.parameters()) for net in (full, partial)]
    # pointwise weights C^2 -> (C/4)^2, depthwise C -> C/4 (the factorized reductions of the preprocessing and
    # the stride-2 edges' bypass hold none: the bypass max-pools)
    assert count[0] / 16 < count[1] < count[0] / 4


@pytest.mark.parametrize("method", ["darts-minus", "pc-darts"])
def test_darts_minus_and_pc_darts_resume_to_the_same_result(tiny_search, tmp_path, interrupt_at, method):
    extra = ["max_images=96", "checkpoint_every=2", *(["warmup_epochs=1"] if method == "pc-darts" else [])]
    reference = tiny_search(method, epochs=2, name="ref", overrides=extra)
    g_ref = reference.run()
    interrupt_at(Search, 5)  # in the second epoch of 3 steps, between two checkpoints
    with pytest.raises(DnasError, match="interrupted"):
        tiny_search(method, epochs=2, name="resumed", overrides=extra).run()
    interrupt_at(Search, None)
    resumed = tiny_search(method, epochs=2, name="resumed", overrides=extra)
    assert resumed.run() == g_ref
    for p, q in zip(resumed.algorithm.problem.arch, reference.algorithm.problem.arch, strict=True):
        assert torch.equal(p, q)
    for p, q in zip(resumed.algorithm.problem.weights, reference.algorithm.problem.weights, strict=True):
        assert torch.equal(p, q)
