"""DARTS-PRIME: clamp activation, Fisher schedule, projection, prox and ADMM regularizers, presets."""

import math
from types import SimpleNamespace

import pytest
import torch

from dnas.bilevel.methods import METHODS
from dnas.bilevel.problem import StepContext
from dnas.bilevel.run import Search
from dnas.bilevel.step import SearchStep
from dnas.components.activations import Softmax
from dnas.components.discretizers import ArgmaxRule, DartsRule
from dnas.components.prime import ADMM, Clamp, FisherSchedule, Proximity, project_discrete
from dnas.config.resolve import resolve_config
from dnas.errors import DnasError
from dnas.runtime.files import CHECKPOINT, read_metrics
from dnas.spaces import Genotype, get_space

NB201, DARTS = get_space("nb201"), get_space("darts")


def _problem(activation, alphas):
    """The parts of a BilevelProblem the regularizers read."""
    return SimpleNamespace(activation=activation, alphas=alphas)


def _rows(*row, n=6):
    return torch.tensor([list(row)] * n)


# ----- projection ---------------------------------------------------------------------------------------
def _cell_pairs(space, z):
    """Per cell type, the set of (op, input node) pairs marked in the 0/1 matrix ``z``."""
    out = {}
    for t, topo in space.cells.items():
        out[t] = {(topo.edge_ops[e][k], topo.edges[e][0]) for e, k in z[t].nonzero().tolist()}
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_projection_is_the_darts_rule_cell(seed):
    g = torch.Generator().manual_seed(seed)
    w = {t: torch.rand(14, 8, generator=g) for t in DARTS.cell_types}
    z = project_discrete(DARTS, w)
    genotype = DartsRule()(DARTS, w)
    for t in DARTS.cell_types:
        assert z[t].shape == (14, 8) and set(z[t].unique().tolist()) == {0.0, 1.0}
        assert z[t].sum() == 8 and z[t][:, 0].sum() == 0  # never none
        topo = DARTS.cells[t]
        assert all(z[t][topo.incoming(node)].sum() == 2 for node in topo.intermediate_nodes)
    assert _cell_pairs(DARTS, z) == {t: set(genotype.cells[t]) for t in DARTS.cell_types}


def test_projection_ties_follow_the_darts_rule():
    w = {t: torch.full((14, 8), 0.5) for t in DARTS.cell_types}
    z = project_discrete(DARTS, w)["normal"]
    # ties: the earlier edges of each node, and the first non-none op (column 1)
    assert z.nonzero().tolist() == [[e, 1] for e in (0, 1, 2, 3, 5, 6, 9, 10)]
    assert _cell_pairs(DARTS, {"normal": z, "reduce": z})["normal"] == set(DartsRule()(DARTS, w).cells["normal"])


def test_projection_on_nb201_is_the_argmax_per_edge_with_none():
    w = {"cell": torch.tensor([[0.9, 0.1, 0.0, 0.0, 0.0], [0.1, 0.2, 0.7, 0.0, 0.0], [0.2, 0.2, 0.1, 0.1, 0.1],
                               [0.0, 0.0, 0.0, 0.0, 1.0], [0.3, 0.3, 0.3, 0.4, 0.0], [0.1, 0.0, 0.0, 0.0, 0.0]])}
    z = project_discrete(NB201, w)["cell"]
    assert z.argmax(dim=1).tolist() == [0, 2, 0, 4, 3, 0] and (z.sum(dim=1) == 1).all()
    genotype = ArgmaxRule()(NB201, w)
    assert [NB201.cells["cell"].edge_ops[e][k] for e, k in z.nonzero().tolist()] == [op for op, _ in
                                                                                      genotype.cells["cell"]]
    # a mask removes entries while a live alternative exists
    mask = torch.ones(6, 5, dtype=torch.bool)
    mask[:, 0] = False
    assert project_discrete(NB201, w, {"cell": mask})["cell"].argmax(dim=1).tolist() == [1, 2, 1, 4, 3, 1]


# ----- clamp activation ---------------------------------------------------------------------------------
def _clamp(space=NB201, **kw):
    act = Clamp(**kw)
    act.bind(space)
    return act


def test_clamp_gradient_vanishes_outside_the_unit_interval():
    act = Clamp()
    alpha = torch.tensor([[-0.5, -1e-3, 0.3, 0.7, 1.2, 4.0]], requires_grad=True)
    a = act(alpha, "cell")
    assert a[0].tolist() == pytest.approx([0.0, 0.0, 0.3, 0.7, 1.0, 1.0])
    (a * torch.arange(1.0, 7.0)).sum().backward()
    assert alpha.grad.tolist() == [[0.0, 0.0, 3.0, 4.0, 0.0, 0.0]]


def test_clamp_init_masks_none_and_uses_one_over_the_real_ops():
    act = _clamp(DARTS)
    alpha = act.init_alpha((14, 8), torch.Generator().manual_seed(0))
    assert (alpha[:, 0] == 0).all()
    assert (alpha[:, 1:] - 1 / 7).abs().max() < 1e-3 and (alpha[:, 1:] != 1 / 7).any()  # small noise
    a = act(alpha, "normal")
    assert (a[:, 0] == 0).all()
    mask = act.active_mask({"normal": a, "reduce": a})
    assert mask["normal"].device.type == "cpu" and not mask["normal"][:, 0].any() and mask["normal"][:, 1:].all()
    assert Clamp.node_bn and not Clamp.allows_none
    # S1 has no none: 2 real ops per edge -> 1/2
    s1 = _clamp(get_space("s1")).init_alpha((14, 2), torch.Generator().manual_seed(0))
    assert (s1 - 0.5).abs().max() < 1e-3


def test_pruned_weights_stay_pruned_across_steps():
    act = _clamp()
    alpha = torch.nn.Parameter(act.init_alpha((6, 5), torch.Generator().manual_seed(0)))  # ~0.25
    opt = torch.optim.Adam([alpha], lr=0.1, weight_decay=1e-3)
    down = -torch.ones(6, 5)
    down[0, 2] = 1.0  # minimising <A, down> drives alpha[0, 2] below 0 in 3 Adam steps, the others up
    for step in range(7):
        opt.zero_grad()
        loss = (act(alpha, "cell") * down).sum() if step < 3 else -act(alpha, "cell").sum()  # then all up
        loss.backward()
        opt.step()
        act.after_weight_step({"cell": alpha})
        if step == 2:
            assert alpha[0, 2] == 0 and not act.active_mask({"cell": alpha})["cell"][0, 2]
        if step > 2:  # Adam's momentum and weight decay still act on it; the mask and the hook keep it at 0
            assert alpha.grad[0, 2] == 0 and alpha[0, 2] == 0
    live = torch.ones(6, 5, dtype=torch.bool)
    live[:, 0] = live[0, 2] = False
    assert (alpha[~live] == 0).all() and (alpha[live] > 0.5).all()
    assert (act(alpha, "cell")[:, 0] == 0).all() and act(alpha, "cell")[0, 2] == 0
    mask = act.active_mask({"cell": alpha})["cell"]
    assert mask.sum() == 6 * 4 - 1 and act.metrics() == {"active.cell": 23.0}


def test_mask_host_copy_may_lag_but_the_weights_are_exact():
    act = _clamp(mask_sync_every=3)
    alpha = torch.full((6, 5), 0.2)
    alpha[1, 3] = -0.1
    act.after_weight_step({"cell": alpha})
    assert alpha[1, 3] == 0 and act(alpha, "cell")[1, 3] == 0  # device mask: exact at once
    assert act.active_mask({"cell": alpha})["cell"][1, 3]  # host copy: still computed (times 0)
    act.after_weight_step({"cell": alpha})
    act.after_weight_step({"cell": alpha})
    assert not act.active_mask({"cell": alpha})["cell"][1, 3]


def test_clamp_state_round_trip():
    act = _clamp()
    alpha = torch.full((6, 5), 0.2)
    alpha[2, 1] = -1.0
    act.after_weight_step({"cell": alpha})
    other = _clamp()
    other.load_state_dict(act.state_dict())
    assert torch.equal(other.active_mask({"cell": alpha})["cell"], act.active_mask({"cell": alpha})["cell"])
    fresh = torch.full((6, 5), 0.3)
    assert other(fresh, "cell")[2, 1] == 0 and other(fresh, "cell")[2, 2] == pytest.approx(0.3)


# ----- fisher schedule ----------------------------------------------------------------------------------
def _grads(fisher):
    """Weight gradients whose squared sum is ``fisher``."""
    return [torch.tensor([math.sqrt(fisher / 2)]), torch.tensor([[math.sqrt(fisher / 2)]])]


def test_fisher_schedule_against_hand_computed_values():
    # theta0=1, m=2, f=1 -> d=1/2, gamma=1/2; FI = 4, 1, 0.25, 9, 1
    sched = FisherSchedule(f=1, gamma=0.5, threshold=1.0, multiplier=2.0)
    takes, thetas, ewmas = [], [], []
    for step, fi in enumerate([4.0, 1.0, 0.25, 9.0, 1.0]):
        takes.append(sched.take_arch_step(step))
        thetas.append(sched.theta)
        sched.observe_weight_gradients(_grads(fi))
        ewmas.append(float(sched.metrics()["fisher_ewma"]))
    # E: 4 (first value), 2.5, 1.375, 5.1875, 3.09375; the decision before step t+1 is 0 < E_t < theta_t
    assert ewmas == pytest.approx([4.0, 2.5, 1.375, 5.1875, 3.09375])
    assert takes == [False, False, True, True, False]
    assert thetas == [2.0, 4.0, 2.0, 1.0, 2.0]
    metrics = sched.metrics()
    assert metrics["arch_steps"] == 2 and metrics["threshold"] == 2.0 and float(metrics["fisher"]) == pytest.approx(1)


def test_fisher_schedule_takes_one_step_per_f_at_low_fisher():
    f, n = 10, 5500
    sched = FisherSchedule(f=f)
    g = torch.Generator().manual_seed(0)
    trend = torch.sin(2 * math.pi * torch.arange(n) / 400)  # slow drifts of the level, and noise around it
    fisher = 5.0 * torch.exp(trend + 0.5 * torch.randn(n, generator=g))
    taken = []
    for step in range(n):
        taken.append(sched.take_arch_step(step))
        sched.observe_weight_gradients(_grads(float(fisher[step])))
    taken = torch.tensor(taken)
    count = int(taken.sum())
    # steady state: f steps without for each step with, i.e. a share 1/(1+f) of the iterations
    assert abs(count - n / (1 + f)) < 0.02 * n / (1 + f)
    assert sched.arch_steps == count
    # placed at low Fisher: the threshold follows the slow trend, and the steps come where the Fisher of
    # the previous step lies well below its local level (mean over +-15 steps)
    local = torch.nn.functional.avg_pool1d(fisher.view(1, 1, -1), 31, 1, 15, count_include_pad=False).view(-1)
    chosen = taken[1:]
    assert (fisher[:-1][chosen] / local[:-1][chosen]).mean() < 0.75
    assert (fisher[:-1][~chosen] / local[:-1][~chosen]).mean() > 1.0


def test_fisher_schedule_split_and_resume():
    assert FisherSchedule(f=10).train_portion == pytest.approx(10 / 11)
    assert FisherSchedule(f=10, rebalance_split=False).train_portion is None
    with pytest.raises(DnasError, match="multiplier"):
        FisherSchedule(multiplier=1.0)
    a, b = FisherSchedule(f=2, threshold=3.0), FisherSchedule(f=2, threshold=3.0)
    seq = [4.0, 1.0, 2.0, 0.5, 0.5, 1.0, 1.0, 3.0, 0.2, 0.1]
    for step, fi in enumerate(seq[:5]):
        a.take_arch_step(step)
        a.observe_weight_gradients(_grads(fi))
    assert a.state_dict()["next"] is True  # the decision for the next step is part of the state
    b.load_state_dict(a.state_dict())
    for step, fi in enumerate(seq[5:], start=5):
        assert a.take_arch_step(step) == b.take_arch_step(step)
        a.observe_weight_gradients(_grads(fi))
        b.observe_weight_gradients(_grads(fi))
    assert a.state_dict() == b.state_dict()


# ----- prox -------------------------------------------------------------------------------------------
def test_prox_loss_and_gradient_against_hand_computed_values():
    reg = Proximity(rho=0.1)
    reg.bind(NB201)
    a = _rows(0.1, 0.6, 0.1, 0.1, 0.1)
    a[0] = torch.tensor([0.6, 0.1, 0.1, 0.1, 0.1])  # softmax keeps none: the projection may pick it
    a.requires_grad_(True)
    problem = _problem(Softmax(), {"cell": a})
    ctx = StepContext(epoch=1, epochs=3, epochs_elapsed=1.5)
    terms = reg(problem, {"cell": a}, ctx)
    # ||A - Pi(A)||^2 = 6 rows * (4 * 0.1^2 + 0.4^2) = 1.2;  (t/T) rho/2 = (1.5/3) * 0.05 = 0.025
    assert list(terms) == ["prox.cell"]
    assert float(terms["prox.cell"].detach()) == pytest.approx(0.025 * math.sqrt(1.2))
    terms["prox.cell"].backward()
    diff = _rows(0.1, -0.4, 0.1, 0.1, 0.1)
    diff[0] = torch.tensor([-0.4, 0.1, 0.1, 0.1, 0.1])
    assert torch.allclose(a.grad, 0.025 * diff / math.sqrt(1.2))
    assert reg.metrics()["coefficient"] == pytest.approx(0.025)
    assert float(reg.metrics()["distance.cell"]) == pytest.approx(math.sqrt(1.2))
    squared = Proximity(rho=0.1, squared=True, ramp=False)
    squared.bind(NB201)
    assert float(squared(problem, {"cell": a}, ctx)["prox.cell"].detach()) == pytest.approx(0.05 * 1.2)
    start = StepContext(epoch=0, epochs=3, epochs_elapsed=0.0)
    assert float(reg(problem, {"cell": a}, start)["prox.cell"].detach()) == 0.0  # the ramp starts at 0


# ----- ADMM -------------------------------------------------------------------------------------------
def test_admm_textbook_updates_against_hand_computed_values():
    reg = ADMM(rho=0.1, admm_freq=2, variant="textbook")
    reg.bind(NB201)
    problem = _problem(Softmax(), {})
    a0 = _rows(0.2, 0.2, 0.2, 0.2, 0.2)
    assert float(reg(problem, {"cell": a0})["admm.cell"]) == 0.0  # Z = A(alpha_0), U = 0
    a1 = _rows(0.1, 0.3, 0.2, 0.2, 0.2)
    # no update yet: ||A1 - A0|| = sqrt(6 * 0.02)
    assert float(reg(problem, {"cell": a1})["admm.cell"]) == pytest.approx(0.05 * math.sqrt(0.12))
    a2 = _rows(0.1, 0.6, 0.1, 0.1, 0.1)
    term = reg(problem, {"cell": a2})["admm.cell"]  # update: Z = Pi(A2 + 0) = e1, U = A2 - e1
    assert torch.equal(reg.z["cell"], _rows(0.0, 1.0, 0.0, 0.0, 0.0))
    assert torch.allclose(reg.u["cell"], _rows(0.1, -0.4, 0.1, 0.1, 0.1))
    assert float(term) == pytest.approx(0.05 * 2 * math.sqrt(1.2))  # A2 - Z + U = 2 (A2 - Z)
    reg(problem, {"cell": a2})
    a4 = _rows(0.25, 0.35, 0.2, 0.1, 0.1)  # arg-max is op 1, but A4 + U = (.35, -.05, .3, .2, .2) -> none
    term = reg(problem, {"cell": a4})["admm.cell"]
    assert torch.equal(reg.z["cell"], _rows(1.0, 0.0, 0.0, 0.0, 0.0))
    assert torch.allclose(reg.u["cell"], _rows(-0.65, -0.05, 0.3, 0.2, 0.2))
    # A4 - Z + U = (-1.4, .3, .5, .3, .3): 6 * 2.48
    assert float(term) == pytest.approx(0.05 * math.sqrt(14.88))
    metrics = reg.metrics()
    assert metrics["updates"] == 2 and float(metrics["primal.cell"]) == pytest.approx(math.sqrt(6 * 0.745))
    squared = ADMM(rho=0.1, squared=True, variant="textbook")
    squared.bind(NB201)
    squared.load_state_dict(reg.state_dict())
    squared.calls = 1  # no update on this call
    assert float(squared(problem, {"cell": a4})["admm.cell"]) == pytest.approx(0.05 * 14.88)


def test_admm_code_variant_mixes_raw_alpha_and_activation():
    reg = ADMM(rho=0.1, admm_freq=1, variant="code", kappa=0.5)
    reg.bind(NB201)
    act = Softmax()
    alpha = torch.tensor([[2.0, 0.0, 0.0, 0.0, 0.0]] * 6)
    problem = _problem(act, {"cell": alpha})
    reg(problem, {"cell": act(alpha, "cell")})
    assert torch.equal(reg.z["cell"], alpha)  # Z starts at the raw alpha
    reg.u["cell"] = torch.tensor([[0.0, 3.0, 0.0, 0.0, 0.0]] * 6)
    reg(problem, {"cell": act(alpha, "cell")})
    # Z = Pi(softmax(alpha + U)) = e1 (3 > 2); U = 0.5 U + alpha - Z
    assert torch.equal(reg.z["cell"], _rows(0.0, 1.0, 0.0, 0.0, 0.0))
    assert torch.allclose(reg.u["cell"], _rows(2.0, 0.5, 0.0, 0.0, 0.0))


def test_admm_with_clamp_masks_pruned_entries_and_never_projects_onto_them():
    act = _clamp()
    alpha = _rows(0.0, 0.5, 0.2, 0.2, 0.2)
    alpha[:, 1] = -0.1  # op 1 pruned on every edge
    act.after_weight_step({"cell": alpha})
    reg = ADMM(rho=0.1, admm_freq=1, variant="textbook")
    reg.bind(NB201)
    problem = _problem(act, {"cell": alpha})
    reg(problem, {"cell": act(alpha, "cell")})
    reg.u["cell"] = _rows(0.0, 5.0, 0.0, 0.0, 0.1)  # a huge dual on the pruned op
    term = reg(problem, {"cell": act(alpha, "cell")})["admm.cell"]
    assert torch.equal(reg.z["cell"], _rows(0.0, 0.0, 0.0, 0.0, 1.0))  # not the pruned op 1, not none
    assert (reg.u["cell"][:, :2] == 0).all()
    # U = (U + A - Z) * M = (0, 0, .2, .2, -.7); residual (A - Z + U) * M on ops 2..4 = (.4, .4, -1.5)
    assert float(term) == pytest.approx(0.05 * math.sqrt(6 * (0.16 + 0.16 + 2.25)))


def test_regularizers_need_the_space():
    with pytest.raises(DnasError, match="bind"):
        Proximity()(_problem(Softmax(), {}), {"cell": torch.zeros(6, 5)})


# ----- presets and end-to-end searches ------------------------------------------------------------------
def _search(tmp_path, space, method, extra=(), name="run", epochs=1) -> tuple[Search, Genotype]:
    size = ["layers=3", "max_images=48"] if space == "darts" else ["layers=1", "max_images=64"]
    cfg = resolve_config({"space": space, "method": method, "epochs": epochs, "batch_size": 4},
                         ["channels=4", "log_every=1", "schedule.threshold=1000", "a_lr=0.05", *size, *extra])
    search = Search(cfg, tmp_path / name, progress=False)
    return search, search.run()


def _same(a, b):
    """Exact equality of nested dicts of tensors and numbers."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    return a == b


def _records(out):
    return read_metrics(out)


def test_presets_are_registered():
    prime = resolve_config({"space": "darts", "method": "darts-prime"})
    v1 = resolve_config({"space": "nb201", "method": "darts-prime-v1"})
    assert {"darts-prime", "darts-prime-v1"} <= set(METHODS.names())
    assert (prime.activation.name, prime.schedule.name, [r.name for r in prime.arch_regularizers]) == (
        "softmax", "fisher", ["prox"])
    assert prime.schedule.params["f"] == 10 and prime.arch_regularizers[0].params["rho"] == 0.1
    assert (v1.activation.name, v1.schedule.name, [r.name for r in v1.arch_regularizers]) == (
        "clamp", "fisher", ["admm"])
    mixed = resolve_config({"space": "nb201", "method": "darts-prime"}, ["arch_regularizers=prox,admm"])
    assert [r.name for r in mixed.arch_regularizers] == ["prox", "admm"]


@pytest.mark.parametrize("space", ["nb201", "darts"])
@pytest.mark.parametrize("method", ["darts-prime", "darts-prime-v1"])
def test_end_to_end_searches_log_schedule_and_regularizers(tmp_path, space, method):
    extra = ["arch_regularizers.admm.admm_freq=2"] if method.endswith("v1") else []
    run, genotype = _search(tmp_path, space, method, extra)
    search = run.algorithm
    n_train = len(search.train_stream.indices)
    assert n_train == round((n_train + len(search.val_stream.indices)) * 10 / 11)  # rebalanced split
    steps = [r for r in _records(tmp_path / "run") if r["kind"] == "step"]
    last = steps[-1]
    assert 0 < search.arch_steps < run.global_step and last["schedule.arch_steps"] == search.arch_steps
    assert {"schedule.fisher_ewma", "schedule.threshold", "schedule.fisher"} <= set(last)
    # the threshold after s decisions, a of them arch steps: theta_0 m^(s - a) d^a (theta_0 = 1000 here)
    m, d = 1.05, 1.05 ** -10
    for r in steps:
        a = r["schedule.arch_steps"]
        assert r["schedule.threshold"] == pytest.approx(1000 * m ** (r["step"] - a) * d**a, rel=1e-9)
    kind = "prox" if method == "darts-prime" else "admm"
    assert search.arch_regularizers[0].name == kind
    arch_records = [r for prev, r in zip(steps, steps[1:], strict=False) if r["arch_steps"] > prev["arch_steps"]]
    assert arch_records
    for r in arch_records:  # records of iterations that took an architecture step (log_every=1)
        for t in search.space.cell_types:
            value = r[f"arch_regularizers.0.value.{t}"]
            if kind == "prox":  # (t/T) rho/2 ||A - Pi(A)||, t the epochs before this iteration (T = 1)
                coefficient = (r["step"] - 1) / search.steps_per_epoch * 0.05
                assert r["arch_regularizers.0.coefficient"] == pytest.approx(coefficient, rel=1e-9)
                assert value == pytest.approx(coefficient * r[f"arch_regularizers.0.distance.{t}"], rel=1e-6)
    if kind == "admm":
        first = next(r for r in steps if r["arch_steps"] == 1)
        # the first call: Z = alpha_0, U = 0 and A(alpha_0) = alpha_0 on the live ops, so the term is exactly 0
        assert all(first[f"arch_regularizers.0.value.{t}"] == 0.0 for t in search.space.cell_types)
        assert any(r[f"arch_regularizers.0.value.{t}"] > 0 for r in arch_records[1:] for t in search.space.cell_types)
        # Z and U are updated before every (admm_freq + 1)-th call: floor((calls - 1) / admm_freq) updates
        assert all(r["arch_regularizers.0.updates"] == (r["arch_steps"] - 1) // 2 for r in arch_records)
        for t, alpha in search.problem.alphas.items():
            mask = search.activation.active_mask({t: alpha})[t]
            assert (alpha[~mask.to(alpha.device)] == 0).all() and not mask[:, 0].any()
            assert f"activation.active.{t}" in last
        if space == "nb201":  # the arg-max picks none exactly on the edges whose real ops are all pruned
            strengths = search.problem.strengths()["cell"]
            assert [op == "none" for op, _ in genotype.cells["cell"]] == (strengths.max(dim=1).values == 0).tolist()


def test_none_is_derived_exactly_on_fully_pruned_edges():
    act = _clamp()
    alpha = act.init_alpha((6, 5), torch.Generator().manual_seed(0))  # none at 0, the real ops ~0.25
    alpha[2, 1:] = torch.tensor([-0.1, -0.2, -1e-3, -0.5])  # every real op of edge 2 went below 0
    alpha[4, 1:4] = -0.3  # edge 4 keeps one real op (column 4)
    act.after_weight_step({"cell": alpha})
    assert (alpha[2] == 0).all() and (alpha[4, :4] == 0).all() and alpha[4, 4] > 0
    genotype = ArgmaxRule()(NB201, {"cell": act.strength(alpha, "cell")})
    ops = [op for op, _ in genotype.cells["cell"]]
    assert ops[2] == "none" and ops[4] == NB201.cells["cell"].edge_ops[4][4]
    assert [op == "none" for op in ops] == [False, False, True, False, False, False]


def test_admm_updates_after_every_admm_freq_architecture_steps():
    """Official timing: Z, U updated after the 9th, 18th, ... step (before the 10th, 19th, ...);
    textbook: after every 10th."""
    problem = _problem(Softmax(), {})
    a = _rows(0.1, 0.6, 0.1, 0.1, 0.1)
    for freq, variant, first_updates in ((9, "code", [9, 18, 27]), (10, "textbook", [10, 20])):
        reg = ADMM(admm_freq=freq, variant=variant)
        reg.bind(NB201)
        problem.alphas = {"cell": a}
        updated_before = []  # 0-based index of the architecture step whose loss first sees an update
        for call in range(30):
            before = reg.updates
            reg(problem, {"cell": a.softmax(-1) if variant == "code" else a})
            if reg.updates > before:
                updated_before.append(call)
        assert updated_before == first_updates, variant
    assert ADMM().admm_freq == 9 and ADMM().variant == "code"  # the official update and timing by default


def test_clamp_supernet_normalises_every_node_and_softmax_does_not(tmp_path):
    for method, normalised in (("darts-prime-v1", True), ("darts-prime", False)):
        cfg = resolve_config({"space": "darts", "method": method, "epochs": 1, "batch_size": 8},
                             ["channels=4", "layers=3", "max_images=200"])
        search = SearchStep(cfg)
        nodes: list[torch.Tensor] = []

        def keep(module, args, out, nodes=nodes):
            nodes.extend(out)

        for cell in search.problem.net.cells:
            cell.nodes.register_forward_hook(keep)
        x = next(search.train_stream)[0]
        with torch.no_grad():
            search.problem.forward(x)
        assert len(nodes) == 3 * 4  # 3 cells, 4 intermediate nodes each
        for node in nodes:
            mean = node.mean(dim=(0, 2, 3))
            var = node.var(dim=(0, 2, 3), unbiased=False)
            is_normalised = bool(mean.abs().max() < 1e-4 and (var - 1).abs().max() < 1e-2)
            assert is_normalised == normalised, method


def test_preset_schedule_from_its_initial_threshold_of_one(tmp_path):
    """The darts-prime preset as it is (theta_0 = 1, its alpha lr): an architecture step comes exactly
    after the steps whose smoothed Fisher trace lies below the threshold, 0 < E_t < theta_t."""
    cfg = resolve_config({"space": "nb201", "method": "darts-prime", "epochs": 1, "batch_size": 8},
                         ["channels=4", "layers=1", "max_images=800", "log_every=1"])
    assert cfg.schedule.params["threshold"] == 1.0 and cfg.a_lr == 3e-4
    search = Search(cfg, tmp_path / "run", progress=False)
    search.run()
    steps = [r for r in _records(tmp_path / "run") if r["kind"] == "step"]
    taken = [now["arch_steps"] - prev["arch_steps"] for prev, now in zip(steps, steps[1:], strict=False)]
    due = [int(0 < prev["schedule.fisher_ewma"] < prev["schedule.threshold"]) for prev in steps[:-1]]
    assert taken == due
    assert steps[0]["arch_steps"] == 0 and 0 < sum(taken) < len(taken)


def test_clamp_admm_search_resumes_with_masks_z_u_and_ewma(tmp_path, interrupt_at):
    extra = ["arch_regularizers.admm.admm_freq=2", "checkpoint_every=0", "a_lr=0.1"]
    reference, g_ref = _search(tmp_path, "nb201", "darts-prime-v1", extra, name="ref", epochs=2)
    arch = {r["step"]: r["arch_steps"] for r in _records(tmp_path / "ref") if r["kind"] == "step"}
    # interrupt right before an iteration that takes an architecture step (its decision is pending)
    stop = next(s for s in range(16, max(arch)) if arch[s + 1] > arch[s])
    interrupt_at(Search, stop)
    with pytest.raises(DnasError, match="interrupted"):
        _search(tmp_path, "nb201", "darts-prime-v1", extra, name="resumed", epochs=2)
    interrupt_at(Search, None)
    saved = torch.load(tmp_path / "resumed" / CHECKPOINT, weights_only=True)["components"]
    pruned = ~saved["activation"]["masks"]["cell"]
    assert pruned[:, 1:].any()  # something real was pruned before the interruption
    assert saved["arch_regularizers.0"]["updates"] >= 1 and saved["schedule"]["ewma"] is not None
    assert saved["schedule"]["next"] is True
    resumed, g_res = _search(tmp_path, "nb201", "darts-prime-v1", extra, name="resumed", epochs=2)
    assert g_res == g_ref
    assert torch.equal(resumed.problem.alphas["cell"], reference.problem.alphas["cell"])
    assert (resumed.problem.alphas["cell"][pruned] == 0).all()
    for key in ("activation", "schedule", "arch_regularizers.0"):
        ours, theirs = resumed.algorithm.components[key], reference.algorithm.components[key]
        assert _same(ours.state_dict(), theirs.state_dict()), key
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in _records(tmp_path / "ref")]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in _records(tmp_path / "resumed")]


def test_fisher_trace_is_taken_before_weight_regularizers_add_their_gradient(tmp_path, monkeypatch):
    from dnas.components.lambda_darts import LambdaRegularizer

    seen: list[float] = []
    observe = FisherSchedule.observe_weight_gradients

    def record(self, grads):
        seen.append(sum(float(g.square().sum()) for g in grads))
        observe(self, grads)

    def huge(self, problem, *args):  # a regularizer gradient that would dominate the trace
        for p in problem.weights:
            if p.grad is not None:
                p.grad.add_(1e3)

    monkeypatch.setattr(FisherSchedule, "observe_weight_gradients", record)
    monkeypatch.setattr(LambdaRegularizer, "add_gradient", huge)
    cfg = resolve_config({"space": "nb201", "epochs": 1, "batch_size": 8},
                         ["channels=4", "layers=1", "max_images=160", "schedule=fisher", "weight_regularizers=lambda"])
    Search(cfg, tmp_path / "run", progress=False).run()
    assert seen and max(seen) < 1e6  # sum of (grad + 1e3)^2 over thousands of weights would be > 1e9
