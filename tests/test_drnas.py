"""DrNAS: the Dirichlet activation and its KL regularizer, the progressive stages (pruning, net2wider
widening of the partial-channel supernet, frozen epochs), each against a transcription of the official
code (xiangning-chen/DrNAS ``utils.py``, ``net2wider.py``, the ops' ``wider``), and the preset end to end."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dnas.bilevel.problem import BilevelProblem
from dnas.bilevel.run import Search
from dnas.components.drnas import DirichletKL, DirichletSample, dirichlet_kl_to_uniform
from dnas.components.progression import Stages, prune_to_top
from dnas.config.resolve import resolve_config
from dnas.errors import DnasError
from dnas.runtime.files import read_metrics
from dnas.spaces import get_space
from dnas.spaces.ops import DilConv, FactorizedReduce, ReLUConvBN, SepConv
from dnas.supernet import build_supernet, copy_into_reference
from dnas.supernet.widen import apply_widening, copy_outside_ops, plan_widening, widen_tensor


# ----- transcriptions of the official code ----------------------------------------------------------------
def official_process_step_matrix(x, method, mask):
    """utils.py ``process_step_matrix`` / ``process_step_vector``, transcribed (softmax and dirichlet)."""
    rows = []
    for i, line in enumerate(x):
        if method == "softmax":
            out = F.softmax(line, dim=-1)
        else:
            out = torch.distributions.dirichlet.Dirichlet(F.elu(line) + 1).rsample()
        if mask is not None:
            pruned = torch.zeros_like(out)
            pruned[mask[i]] = out[mask[i]]
            pruned /= pruned.sum()
            out = pruned
        rows.append(out)
    return torch.stack(rows)


def official_prune(x, num_keep, mask):
    """utils.py ``prune`` (reset=False), transcribed."""
    if mask is not None:
        x.data[~mask] -= 1000000
    src, index = x.topk(k=num_keep, dim=-1)
    x.data.copy_(torch.zeros_like(x).scatter(dim=1, index=index, src=src))
    return torch.zeros_like(x, dtype=torch.bool).scatter(dim=1, index=index, src=torch.ones_like(src, dtype=torch.bool))


def official_kl(alpha):
    """The ``--reg_type kl`` term of one cell type: KL(Dir(elu(alpha)+1) || Dir(1)) summed over edges."""
    beta = F.elu(alpha) + 1
    anchor = torch.distributions.Dirichlet(torch.ones_like(beta))
    return torch.distributions.kl.kl_divergence(torch.distributions.Dirichlet(beta), anchor).sum()


def _in_wider(w, index):  # net2wider.py InChannelWider with the index given
    return torch.cat([w, w[:, index]], dim=1)


def _out_wider(w, index):  # net2wider.py OutChannelWider with the index given
    return torch.cat([w, w[index]], dim=0)


def official_wider(module, indices):
    """The ops' ``wider`` (operations.py, 201-space/cell_operations.py) on a plain dnas op, with the random
    indices taken from ``indices`` in the official order of draws; returns the widened weights in the op's
    parameter order."""
    if isinstance(module, ReLUConvBN):
        w = _in_wider(module[1].weight, indices.pop(0))
        return [_out_wider(w, indices.pop(0))]
    if isinstance(module, DilConv):  # conv1 out (its index reused for conv2's input), conv2 out
        index = indices.pop(0)
        dw = _out_wider(module[1].weight, index)
        pw = _out_wider(_in_wider(module[2].weight, index), indices.pop(0))
        return [dw, pw]
    if isinstance(module, SepConv):  # SepConv.wider: the two DilConv halves in turn
        return official_wider(module[0], indices) + official_wider(module[1], indices)
    if isinstance(module, FactorizedReduce):
        out = []
        for conv in (module.conv_1, module.conv_2):
            w = _in_wider(conv.weight, indices.pop(0))
            out.append(_out_wider(w, indices.pop(0)))
        return out
    return []  # identity, pooling: nothing to widen


# ----- the activation and the regularizer ------------------------------------------------------------------
def test_dirichlet_samples_are_the_official_ones_and_their_mean_is_the_normalized_concentration():
    torch.manual_seed(0)
    alpha = torch.randn(6, 5, dtype=torch.float64)
    act = DirichletSample()
    torch.manual_seed(3)
    ours = act(alpha, "cell")
    torch.manual_seed(3)
    torch.testing.assert_close(ours, official_process_step_matrix(alpha, "dirichlet", None))
    torch.manual_seed(4)
    mean = torch.stack([act(alpha, "cell") for _ in range(4000)]).mean(dim=0)
    beta = F.elu(alpha) + 1
    torch.testing.assert_close(mean, beta / beta.sum(dim=1, keepdim=True), atol=0.02, rtol=0)
    torch.testing.assert_close(act.strength(alpha, "cell"), alpha.softmax(dim=-1))


def test_pruned_ops_are_zero_in_every_sample_and_the_strength_is_the_masked_softmax():
    space = get_space("nb201")
    act = DirichletSample()
    act.bind(space)
    torch.manual_seed(0)
    alpha = nn.Parameter(torch.randn(6, 5))
    mask = prune_to_top(alpha, 3, None)
    act.restrict({"cell": mask})
    torch.manual_seed(5)
    sample = act(alpha, "cell")
    torch.manual_seed(5)
    torch.testing.assert_close(sample, official_process_step_matrix(alpha, "dirichlet", mask))
    assert (sample[~mask] == 0).all() and torch.allclose(sample.sum(dim=1), torch.ones(6))
    torch.testing.assert_close(act.strength(alpha, "cell"), official_process_step_matrix(alpha, "softmax", mask))
    assert act.active_mask({"cell": sample})["cell"].equal(mask)  # the supernet computes the kept ops alone
    sample.sum().backward()  # the pathwise gradient reaches alpha
    assert alpha.grad is not None and alpha.grad[mask].abs().sum() > 0


def test_prune_is_the_official_prune():
    torch.manual_seed(1)
    for keep_then in ((5, 3), (7, 4), (4, 2)):
        k0 = keep_then[0]
        alpha = torch.randn(14, k0)
        ours, theirs = alpha.clone(), alpha.clone()
        mask_ours = prune_to_top(ours, keep_then[1], None)
        mask_theirs = official_prune(theirs, keep_then[1], None)
        assert torch.equal(mask_ours, mask_theirs) and torch.equal(ours, theirs)
        # a second pruning among the ops the first one kept
        again_ours = prune_to_top(ours, 1, mask_ours)
        again_theirs = official_prune(theirs, 1, mask_theirs)
        assert torch.equal(again_ours, again_theirs) and torch.equal(ours, theirs)


def test_the_kl_regularizer_is_the_official_closed_form():
    torch.manual_seed(2)
    alphas = nn.ParameterDict({"normal": nn.Parameter(torch.randn(14, 7)), "reduce": nn.Parameter(torch.randn(14, 7))})
    problem = BilevelProblem(None, alphas, DirichletSample())  # type: ignore[arg-type]
    term = DirichletKL(scale=0.5)(problem, {})["dirichlet-kl"]
    torch.testing.assert_close(term, 0.5 * (official_kl(alphas["normal"]) + official_kl(alphas["reduce"])))
    # over the ops an exclusion leaves: the KL of the Dirichlet over those ops alone
    kept = torch.ones(14, 7, dtype=torch.bool)
    kept[:, 0] = False
    beta = F.elu(alphas["normal"].detach()) + 1
    torch.testing.assert_close(dirichlet_kl_to_uniform(beta, kept),
                               torch.stack([official_kl(row[None, 1:]) for row in alphas["normal"].detach()]))
    assert DirichletKL()(problem, {})["dirichlet-kl"] > 0
    uniform = BilevelProblem(None, nn.ParameterDict({"c": nn.Parameter(torch.zeros(3, 4))}),  # type: ignore[arg-type]
                             DirichletSample())
    assert DirichletKL()(uniform, {})["dirichlet-kl"].abs() < 1e-6  # alpha = 0: Dir(1), the anchor itself


def test_an_activation_with_its_own_masks_cannot_be_pruned():
    with pytest.raises(DnasError, match="does not allow"):
        resolve_config({"method": "darts-prime-v1", "epochs": 20}, ["progression=stages"])
    with pytest.raises(DnasError, match="leave partial_channels at 1"):
        resolve_config({"method": "drnas", "epochs": 20}, ["partial_channels=2"])
    with pytest.raises(DnasError, match="must not increase"):
        Stages(partial="2,4")
    with pytest.raises(DnasError, match="one partial and one keep per stage"):
        Stages(stage_epochs="10,10,10")
    with pytest.raises(DnasError, match="without an unfrozen epoch"):
        resolve_config({"method": "drnas", "epochs": 1})


def test_stages_scale_with_the_search_epochs():
    stages = Stages()  # 50 + 50 epochs, 10 frozen in each
    assert stages.starts(100) == [0, 50] and stages.frozen(100) == 10
    assert stages.starts(30) == [0, 15] and stages.frozen(30) == 3
    frozen = [stages.arch_frozen(e, 30) for e in range(30)]
    assert frozen == [e % 15 < 3 for e in range(30)]
    assert [stages.stage_of(e, 30) for e in (0, 14, 15, 29)] == [0, 0, 1, 1]


# ----- widening ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("space_name,channels,layers,k", [("nb201", 8, 1, (4, 2)), ("darts", 12, 3, (6, 4)),
                                                          ("darts", 8, 3, (4, 1))])
def test_widening_is_net2wider_of_the_official_ops(space_name, channels, layers, k):
    """Every op of the widened supernet holds the official ``wider`` of the narrow op's weights, with the
    same random channel indices in the official order of draws; all else is copied."""
    space = get_space(space_name)
    torch.manual_seed(0)
    narrow = build_supernet(space, num_classes=5, channels=channels, layers=layers, partial=k[0])
    wide = build_supernet(space, num_classes=5, channels=channels, layers=layers, partial=k[1])
    plan = plan_widening(narrow, wide, torch.Generator().manual_seed(7))
    copy_outside_ops(narrow, wide)
    apply_widening(plan, lambda p: p, lambda p: p)
    ref_narrow = build_supernet(space, num_classes=5, channels=channels, layers=layers, partial=k[0], fused=False)
    ref_wide = build_supernet(space, num_classes=5, channels=channels, layers=layers, partial=k[1], fused=False)
    copy_into_reference(narrow, ref_narrow)
    copy_into_reference(wide, ref_wide)
    indices = []  # the fresh draws in order: an input index shared with a depthwise output is drawn once
    for j, step in enumerate(plan):
        if step.in_index is not None and (j == 0 or step.in_index is not plan[j - 1].out_index):
            indices.append(step.in_index)
        indices.append(step.out_index)
    checked = 0
    for fused_cell, cell_n, cell_w in zip(narrow.node_cells(), ref_narrow.node_cells(), ref_wide.node_cells(),
                                          strict=True):
        for source in fused_cell.fused_sources():
            for op, members in source.members.items():
                for local, col in members:
                    e = source.out_edges[local]
                    widened = official_wider(cell_n.ops_of_edge(e)[col], indices)
                    for got, want in zip(cell_w.ops_of_edge(e)[col].parameters(), widened, strict=True):
                        assert torch.equal(got, want), (op, e)
                        checked += 1
    assert not indices and checked > 0
    for name, value in narrow.state_dict().items():
        if ".sources." not in name:
            assert torch.equal(wide.state_dict()[name], value), name


def test_momentum_buffers_widen_with_the_weights():
    space = get_space("nb201")
    torch.manual_seed(0)
    narrow = build_supernet(space, num_classes=5, channels=8, layers=1, partial=4)
    wide = build_supernet(space, num_classes=5, channels=8, layers=1, partial=2)
    plan = plan_widening(narrow, wide, torch.Generator().manual_seed(1))
    buffers_n = {p: torch.randn_like(p) for p in narrow.parameters()}
    buffers_w = {p: torch.zeros_like(p) for p in wide.parameters()}
    apply_widening(plan, lambda p: buffers_n[p], lambda p: buffers_w[p])
    for step in plan:
        old = step.kind_old.member_views(step.member, lambda p: buffers_n[p])[step.position]
        new = step.kind_new.member_views(step.member, lambda p: buffers_w[p])[step.position]
        assert torch.equal(new, widen_tensor(old, step.in_index, step.out_index))


# ----- the search ------------------------------------------------------------------------------------------------
def _drnas(tiny_search, name="run", epochs=4, extra=()):
    return tiny_search("drnas", epochs=epochs, name=name, overrides=["max_images=96", "channels=8", "log_every=1",
                                                                     "progression.frozen_epochs=25", *extra])


def test_drnas_prunes_widens_and_freezes_alpha_per_stage(tiny_search, tmp_path):
    search = _drnas(tiny_search)  # 4 epochs: stages of 2, the first epoch of each frozen
    search.open()
    try:
        algorithm = search.algorithm
        assert algorithm.problem.net.partial == 4
        start = algorithm.problem.alphas["cell"].detach().clone()
        while search.position.epoch < 1:
            search.step()
        assert torch.equal(algorithm.problem.alphas["cell"], start) and algorithm.arch_steps == 0
        seen = []  # alpha as the second stage begins, before its pruning
        enter = algorithm.enter_stage
        algorithm.enter_stage = lambda stage: (seen.append(algorithm.problem.alphas["cell"].detach().clone()),
                                               enter(stage))
        while algorithm.stage == 0:  # the last step of the first stage enters the second at its end
            search.step()
        (before,) = seen
        assert search.position.epoch == 2 and algorithm.problem.net.partial == 2
        mask = algorithm.pruned["cell"]
        assert mask.sum(dim=1).tolist() == [3] * 6
        assert torch.equal(mask, official_prune(before.clone(), 3, None))
        assert (algorithm.problem.alphas["cell"].detach()[~mask] == 0).all()
        while not search.done:
            search.step()
        search.finish()
    finally:
        search.close()
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    steps_per_epoch = results["steps"] // 4
    assert results["arch_steps"] == 2 * steps_per_epoch  # epochs 1 and 3 of 0..3
    strengths = torch.tensor(results["strengths"]["cell"])
    assert ((strengths > 0).sum(dim=1) == 3).all()  # the derivation ranks the kept ops alone
    lrs = [r["lr"] for r in read_metrics(tmp_path / "run", "step")]
    assert lrs == sorted(lrs, reverse=True)  # one cosine across the stages


@pytest.mark.parametrize("stop", [5, 6, 9])  # inside stage 1, at the boundary, inside stage 2
def test_drnas_resumes_across_the_stages_to_the_same_result(tiny_search, tmp_path, interrupt_at, stop):
    reference = _drnas(tiny_search, name="ref", extra=["checkpoint_every=2"])
    g_ref = reference.run()
    interrupt_at(Search, stop)
    with pytest.raises(DnasError, match="interrupted"):
        _drnas(tiny_search, name="resumed", extra=["checkpoint_every=2"]).run()
    interrupt_at(Search, None)
    resumed = _drnas(tiny_search, name="resumed", extra=["checkpoint_every=2"])
    assert resumed.run() == g_ref
    for p, q in zip(resumed.algorithm.problem.weights, reference.algorithm.problem.weights, strict=True):
        assert torch.equal(p, q)
    assert torch.equal(resumed.algorithm.problem.alphas["cell"], reference.algorithm.problem.alphas["cell"])
    ref_opt, res_opt = reference.algorithm.w_opt.state_dict(), resumed.algorithm.w_opt.state_dict()
    for key, state in ref_opt["state"].items():
        assert torch.equal(state["momentum_buffer"], res_opt["state"][key]["momentum_buffer"])


def test_the_stages_combine_with_other_methods(tiny_search):
    """The progression under DARTS' softmax, and DrNAS' activation under the amended estimator and
    Lambda-DARTS' regularizer."""
    softmax = tiny_search("darts", epochs=4, name="softmax", overrides=[
        "max_images=96", "channels=8", "progression=stages", "progression.frozen_epochs=0"])
    softmax.run()
    assert softmax.algorithm.problem.net.partial == 2 and softmax.algorithm.pruned
    combined = _drnas(tiny_search, name="combined", extra=["estimator=amended", "estimator.hvp=fd",
                                                           "weight_regularizers=lambda"])
    combined.run()
    assert combined.algorithm.arch_steps > 0
