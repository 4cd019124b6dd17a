"""PR-DARTS group-sparsity and path-depth regularizer and discretizers (Zhou et al., NeurIPS 2020).

Regularizer (paper, section 4.1-4.2), on the gate activation probabilities
``P_{s,t}^(l) = sigmoid(beta_{s,t}^(l) - tau ln(-a/b))`` of every cell type::

    L_skip     = zeta sum_l sum_{s<l} P_{s,skip}^(l)
    L_non-skip = zeta/(r-1) sum_l sum_{s<l} sum_{t != skip} P_{s,t}^(l)      (zero and pooling included)
    L_path     = prod_{chain edges} sum_{t in O_p} P_t                      (O_p: parameterised ops)
    R(beta)    = lambda1 L_skip + lambda2 L_non-skip - lambda3 L_path,      lambda1 > lambda2

Choices where the paper is silent or the space differs from the paper's cell:

* ``zeta`` and ``1/(r-1)`` are written as means over the entries of each group: ``L_skip`` is the
  mean of ``P`` over the skip entries and ``L_non-skip`` over all other entries. On ``darts``,
  ``nb201``, ``s2`` and ``s3`` (one skip op per edge) this is exactly ``zeta = 1/E`` and
  ``zeta/(r-1) = 1/(E(r-1))`` with ``E`` the number of edges (the paper's ``2/(h(h-1))`` counts the
  edges of a fully connected cell; the DARTS cell has 14 edges, not 15, its two inputs being
  unconnected). On ``s1`` edges without a skip op add only to the non-skip mean; ``s4`` has no skip
  op, so ``L_skip = 0`` there (``noise`` is in the non-skip group).
* The chain of consecutive nodes starts at the last input node: ``c_{k-1} -> n0 -> n1 -> n2 -> n3``
  in DARTS-family cells (4 edges), ``0 -> 1 -> 2 -> 3`` on NAS-Bench-201 (3 edges, O_p =
  {nor_conv_1x1, nor_conv_3x3}). ``O_p`` is every op with parameters (not ``none``, ``skip_connect``,
  pooling, ``noise``). A chain edge with no parameterised candidate is left out of the product (as
  the official code leaves out edges with no selected conv); a chain with none gives ``L_path = 0``.
* Each term is the mean over the cell types (normal and reduction in DARTS-family spaces), as in
  the official code; one cell type on NAS-Bench-201.
* With an activation that has no gate probability (e.g. ``softmax``), its weights ``A(alpha)``
  stand in for ``P``.

``variant="code"`` follows the official implementation instead: ``P`` only counts the ops
selected in the current sample (``A != 0``), the groups are skip / non-skip (``none`` and the
parameterised ops) / pooling, each group value is the mean ``P`` over its selected entries (mean
over cell types), then a hinge ``max(0, value - hinge)``; the pooling group shares ``lambda2``;
each chain edge contributes the mean ``P`` of its selected parameterised ops (edges with none
selected are left out)::

    R = lambda1 [skip - h]_+ + lambda2 ([nonskip - h]_+ + [pool - h]_+) - lambda3 prod mean P

Discretizers: ``pr-darts`` (paper): per intermediate node, rank every (input, op) pair of every
incoming edge, ``none`` excluded, by ``P`` and keep the top 2 (both may come from the same input);
``pr-darts-code`` ranks them by the per-edge ``softmax(beta)`` (softmax over all ops of the edge,
``none`` included, then ``none`` dropped). Since ``logit P = beta - tau ln(-a/b)`` shifts every
entry by the same constant, ``softmax(logit P) = softmax(beta)`` per edge, so the code rule is
computed from the strengths alone. On NAS-Bench-201, whose cells hold one op per edge, both rules
reduce to the arg-max op per edge (``none`` included, the benchmark's convention).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from dnas.bilevel.problem import BilevelProblem, StepContext
from dnas.components.activations import GatedActivation
from dnas.components.discretizers import DISCRETIZERS, ArgmaxRule, Discretizer
from dnas.components.regularizers import ARCH_REGULARIZERS, ArchRegularizer
from dnas.errors import DnasError
from dnas.spaces.base import PARAMETER_FREE_OPS, CellTopology, SearchSpace
from dnas.spaces.genotype import Genotype

SKIP = "skip_connect"
POOLS = frozenset({"avg_pool_3x3", "max_pool_3x3"})


def chain_edges(topo: CellTopology) -> list[int]:
    """Edge indices of the chain ``last input -> first intermediate -> ... -> last intermediate``."""
    nodes = [topo.num_inputs - 1, *topo.intermediate_nodes]
    return [topo.edge_index(s, d) for s, d in zip(nodes[:-1], nodes[1:], strict=True)]


def op_mask(topo: CellTopology, keep) -> Tensor:
    """``(E, K)`` float mask of the entries whose op name satisfies ``keep``."""
    return torch.tensor([[1.0 if keep(op) else 0.0 for op in ops] for ops in topo.edge_ops])


def is_parameterised(op: str) -> bool:
    return op not in PARAMETER_FREE_OPS


def _masked_mean(p: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``p`` over the entries where ``mask`` is 1 (0 when there are none); no host sync."""
    return (p * mask).sum() / mask.sum().clamp(min=1.0)


class _CellGroups:
    """The constant masks of one cell topology (on the device of the architecture parameters);
    ``kept`` (the activation's ``exclude``) removes ops from every group and from the chain."""

    def __init__(self, topo: CellTopology, device: torch.device, kept: Tensor | None = None):
        keep = torch.ones(topo.num_edges, topo.ops_per_edge) if kept is None else kept.detach().float().cpu()
        self.skip = (op_mask(topo, lambda op: op == SKIP) * keep).to(device)
        self.pool = (op_mask(topo, lambda op: op in POOLS) * keep).to(device)
        self.param = (op_mask(topo, is_parameterised) * keep).to(device)
        self.nonskip = keep.to(device) - self.skip
        self.nonskip_code = self.nonskip - self.pool  # none + parameterised ops (+ noise)
        self.chain = [e for e in chain_edges(topo) if self.param[e].any()]


@ARCH_REGULARIZERS.register("pr-darts")
class PathRegularizer(ArchRegularizer):
    """``lambda1 L_skip + lambda2 L_non-skip - lambda3 L_path`` (see the module docstring).

    Returns the terms ``pr.skip``, ``pr.nonskip`` and ``pr.path`` already multiplied by their
    coefficients (``pr.path`` is ``-lambda3 L_path``). ``variant``: ``"paper"`` or ``"code"``;
    ``hinge`` is the code variant's threshold.
    """

    VARIANTS = ("paper", "code")

    def __init__(self, *, lambda1: float = 0.01, lambda2: float = 0.005, lambda3: float = 0.005,
                 variant: str = "paper", hinge: float = 0.2):
        if min(lambda1, lambda2, lambda3) < 0:
            raise DnasError(f"pr-darts coefficients must be >= 0, got {lambda1}, {lambda2}, {lambda3}")
        if lambda1 < lambda2:  # equal values (e.g. 0 and 0) are allowed for ablations
            raise DnasError(f"pr-darts needs lambda1 >= lambda2 (skip connections penalised at least as hard as "
                            f"the other ops), got lambda1={lambda1}, lambda2={lambda2}")
        if variant not in self.VARIANTS:
            raise DnasError(f"pr-darts variant must be one of {', '.join(self.VARIANTS)}, got {variant!r}")
        if hinge < 0:
            raise DnasError(f"pr-darts hinge must be >= 0, got {hinge}")
        self.lambda1, self.lambda2, self.lambda3 = float(lambda1), float(lambda2), float(lambda3)
        self.variant, self.hinge = variant, float(hinge)
        self._groups: dict[tuple[str, str], _CellGroups] = {}
        self.last: dict[str, Tensor | float] = {}  # terms and raw group values of the last call

    @staticmethod
    def _topology(problem: BilevelProblem, cell_type: str) -> CellTopology:
        return problem.net.space.cells[cell_type]  # the space the supernet was built from

    # ----- the groups --------------------------------------------------------------------------
    def _cell_groups(self, problem: BilevelProblem, cell_type: str, p: Tensor) -> _CellGroups:
        key = (cell_type, str(p.device))
        if key not in self._groups:
            kept = problem.activation.kept(cell_type, p)
            self._groups[key] = _CellGroups(self._topology(problem, cell_type), p.device, kept)
        return self._groups[key]

    @staticmethod
    def probabilities(problem: BilevelProblem, activated: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``P(g != 0)`` per cell type, or ``A(alpha)`` for activations without gate probabilities."""
        activation = problem.activation
        if not isinstance(activation, GatedActivation):
            return dict(activated)
        return {t: activation.probability(a, t) for t, a in problem.alphas.items()}

    def groups(self, problem: BilevelProblem, activated: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The unweighted group values (means over the cell types)."""
        probs = self.probabilities(problem, activated)
        values: dict[str, list[Tensor]] = {}
        for t, p in probs.items():
            g = self._cell_groups(problem, t, p)
            cell = self._paper_cell(p, g) if self.variant == "paper" else self._code_cell(p, g, activated[t])
            for k, v in cell.items():
                values.setdefault(k, []).append(v)
        return {k: torch.stack(v).mean() for k, v in values.items()}

    @staticmethod
    def _paper_cell(p: Tensor, g: _CellGroups) -> dict[str, Tensor]:
        factors = [(p[e] * g.param[e]).sum() for e in g.chain]
        path = torch.stack(factors).prod() if factors else p.new_zeros(())
        return {"skip": _masked_mean(p, g.skip), "nonskip": _masked_mean(p, g.nonskip), "path": path}

    @staticmethod
    def _code_cell(p: Tensor, g: _CellGroups, activated: Tensor) -> dict[str, Tensor]:
        sel = activated.detach().ne(0).to(p.dtype)
        out = {
            "skip": _masked_mean(p, sel * g.skip),
            "nonskip": _masked_mean(p, sel * g.nonskip_code),
            "pool": _masked_mean(p, sel * g.pool),
        }
        path = p.new_ones(())
        any_edge = p.new_zeros(())
        for e in g.chain:
            m = sel[e] * g.param[e]
            count = m.sum()
            factor = (p[e] * m).sum() / count.clamp(min=1.0)
            path = path * torch.where(count > 0, factor, torch.ones_like(factor))
            any_edge = torch.maximum(any_edge, (count > 0).to(p.dtype))
        out["path"] = path * any_edge
        return out

    # ----- the regularizer ---------------------------------------------------------------------
    def __call__(self, problem: BilevelProblem, activated: Mapping[str, Tensor],
                 ctx: StepContext | None = None) -> dict[str, Tensor]:
        raw = self.groups(problem, activated)
        if self.variant == "paper":
            skip, nonskip = raw["skip"], raw["nonskip"]
        else:
            def hinge(v: Tensor) -> Tensor:
                return (v - self.hinge).clamp(min=0.0)

            skip, nonskip = hinge(raw["skip"]), hinge(raw["nonskip"]) + hinge(raw["pool"])
        terms = {
            "pr.skip": self.lambda1 * skip,
            "pr.nonskip": self.lambda2 * nonskip,
            "pr.path": -self.lambda3 * raw["path"],
        }
        self.last = {k.removeprefix("pr."): v.detach() for k, v in terms.items()}
        self.last.update({f"raw.{k}": v.detach() for k, v in raw.items()})
        return terms

    def metrics(self) -> dict[str, float | Tensor]:
        return dict(self.last)

    def state_dict(self) -> dict[str, Any]:
        return {"last": {k: float(v) for k, v in self.last.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last = {k: float(v) for k, v in state["last"].items()}


# ----- discretizers --------------------------------------------------------------------------------
def _top_pairs_per_node(space: SearchSpace, scores: dict[str, Tensor], pairs_per_node: int) -> Genotype:
    """Per intermediate node, the ``pairs_per_node`` (op, input) pairs with the largest score over all
    incoming edges, ``none`` excluded (ties: earlier edge, then earlier op column), strongest first."""
    cells, concat = {}, {}
    for cell_type, topo in space.cells.items():
        s = scores[cell_type]
        pairs: list[tuple[str, int]] = []
        for node in topo.intermediate_nodes:
            candidates = [
                (s[e, k].item(), e, k)
                for e in topo.incoming(node)
                for k, op in enumerate(topo.edge_ops[e])
                if op != "none"
            ]
            chosen = sorted(candidates, key=lambda c: -c[0])[:pairs_per_node]  # stable sort keeps the tie order
            pairs.extend((topo.edge_ops[e][k], topo.edges[e][0]) for _, e, k in chosen)
        cells[cell_type] = tuple(pairs)
        concat[cell_type] = tuple(topo.intermediate_nodes)
    return Genotype(space=space.name, cells=cells, concat=concat)


@DISCRETIZERS.register("pr-darts")
class PaperRule(Discretizer):
    """PR-DARTS paper: per node the top ``pairs_per_node`` (input, op) pairs ranked by ``P(g != 0)``
    across all incoming edges, ``none`` excluded. NAS-Bench-201: arg-max ``P`` per edge."""


    def __init__(self, *, pairs_per_node: int = 2):
        if pairs_per_node < 1:
            raise DnasError(f"pairs_per_node must be at least 1, got {pairs_per_node}")
        self.pairs_per_node = pairs_per_node

    def scores(self, strengths: Tensor) -> Tensor:
        return strengths.detach().cpu().double()

    def __call__(self, space: SearchSpace, strengths: dict[str, Tensor]) -> Genotype:
        if space.family == "nb201":
            return ArgmaxRule()(space, strengths)
        scores = {t: self.scores(s) for t, s in strengths.items()}
        return _top_pairs_per_node(space, scores, self.pairs_per_node)


@DISCRETIZERS.register("pr-darts-code")
class CodeRule(PaperRule):
    """PR-DARTS official code: as ``pr-darts`` but ranked by the per-edge ``softmax(beta)``, computed as
    ``softmax(logit P)`` over all ops of the edge (``none`` included in the normalisation)."""


    def scores(self, strengths: Tensor) -> Tensor:
        p = strengths.detach().cpu().double().clamp(1e-300, 1.0 - 1e-16)
        return torch.softmax(torch.log(p) - torch.log1p(-p), dim=-1)
