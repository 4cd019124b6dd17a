"""Fair DARTS (Chu, Zhou, Zhang, Li, ECCV 2020; code: xiaomi-automl/FairDARTS, folder ``fairdarts``).

Ops do not compete for a softmax's mass: each has an independent sigmoid weight (``model_search.py``)::

    A(alpha)_{e,o} = sigmoid(alpha_{e,o})                      alpha initialised to 0 (A = 0.5)

and a zero-one loss pushes every weight away from 1/2, towards 0 or 1 (``separate_loss.py``
``ConvSeparateLoss``, ``--aux_loss_weight 10``), over all weights of all cell types together::

    L_01 = - (1/N) sum_{e,o} (sigmoid(alpha_{e,o}) - 1/2)^2    ("l2"; "l1": - mean |sigmoid - 1/2|)

added to the validation loss with weight ``w01`` (constant). The cell is derived by thresholds
(``utils.py`` ``parse`` with ``threshold_sparse``, ``--op_threshold 0.85``): per intermediate node the
two incoming edges with the largest sigmoid weight, each with its strongest op, kept only where
that weight reaches the threshold. A node may thus keep one input or none; the derived genotype
lists an absent edge as ``("none", input)``, the evaluation network skips it and an isolated node
(no input left), and the cell concatenates the nodes that have an input (``model.py`` ``DCOCell``).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from dnas.bilevel.problem import BilevelProblem, StepContext
from dnas.components.activations import ACTIVATIONS, Activation
from dnas.components.discretizers import DISCRETIZERS, Discretizer
from dnas.components.regularizers import ARCH_REGULARIZERS, LoggedArchRegularizer
from dnas.errors import DnasError
from dnas.spaces.base import SearchSpace
from dnas.spaces.genotype import Genotype


@ACTIVATIONS.register("sigmoid")
class Sigmoid(Activation):
    """Independent sigmoid weights per op (module docstring); ``alpha ~ N(init_mean, init_std^2)``."""

    prunable = True

    def __init__(self, *, init_mean: float = 0.0, init_std: float = 0.0, exclude: str = ""):
        super().__init__(exclude=exclude)
        if init_std < 0:
            raise DnasError(f"sigmoid init_std must be >= 0, got {init_std}")
        self.init_mean, self.init_std = float(init_mean), float(init_std)

    def init_alpha(self, shape: tuple[int, int], generator: torch.Generator) -> Tensor:
        return self.init_mean + self.init_std * torch.randn(shape, generator=generator)

    def __call__(self, alpha: Tensor, cell_type: str) -> Tensor:
        weights = torch.sigmoid(alpha)
        kept = self.kept(cell_type, alpha)
        return weights if kept is None else weights * kept


@ARCH_REGULARIZERS.register("zero-one")
class ZeroOneLoss(LoggedArchRegularizer):
    """Fair DARTS' zero-one loss ``w01 L_01`` (module docstring), over the kept ops of every cell type."""

    def __init__(self, *, weight: float = 10.0, norm: str = "l2"):
        if weight < 0 or norm not in ("l1", "l2"):
            raise DnasError(f"arch regularizer zero-one needs weight >= 0 and norm l1 or l2, got {weight}, {norm!r}")
        self.weight, self.norm = float(weight), norm
        super().__init__()

    def __call__(self, problem: BilevelProblem, activated: Mapping[str, Tensor],
                 ctx: StepContext | None = None) -> dict[str, Tensor]:
        deviations = []
        for cell_type, alpha in problem.alphas.items():
            d = torch.sigmoid(alpha) - 0.5
            kept = problem.activation.kept(cell_type, alpha)
            deviations.append(d.flatten() if kept is None else d[kept])
        d = torch.cat(deviations)
        raw = -(d.square().mean() if self.norm == "l2" else d.abs().mean())
        self._last = {"raw": raw.detach()}
        return {"zero-one": self.weight * raw}



@DISCRETIZERS.register("fair-darts")
class ThresholdRule(Discretizer):
    """Fair DARTS' ``threshold_sparse`` derivation (module docstring); DARTS-family spaces."""

    def __init__(self, *, threshold: float = 0.85, edges_per_node: int = 2):
        if not 0 <= threshold <= 1 or edges_per_node < 1:
            raise DnasError(f"discretizer fair-darts needs 0 <= threshold <= 1 and edges_per_node >= 1, got "
                            f"{threshold}, {edges_per_node}")
        self.threshold, self.edges_per_node = float(threshold), int(edges_per_node)

    def __call__(self, space: SearchSpace, strengths: dict[str, Tensor]) -> Genotype:
        if space.family != "darts":
            raise DnasError(f"discretizer fair-darts derives DARTS-family cells, not {space.name} cells")
        cells, concat = {}, {}
        for cell_type, topo in space.cells.items():
            w = strengths[cell_type].detach().cpu().double()
            pairs: list[tuple[str, int]] = []
            live: list[int] = []
            for node in topo.intermediate_nodes:
                best = []  # (weight, edge, op column) of each incoming edge's strongest op
                for e in topo.incoming(node):
                    cols = [k for k, op in enumerate(topo.edge_ops[e]) if op != "none"]
                    k = max(cols, key=lambda c: (w[e, c].item(), -c))
                    best.append((w[e, k].item(), e, k))
                ranked = sorted(best, key=lambda t: -t[0])[:self.edges_per_node]
                node_pairs = [(topo.edge_ops[e][k], topo.edges[e][0]) if value >= self.threshold
                              else ("none", topo.edges[e][0]) for value, e, k in ranked]
                if any(op != "none" and (src < topo.num_inputs or src in live) for op, src in node_pairs):
                    live.append(node)
                pairs.extend(node_pairs)
            cells[cell_type] = tuple(pairs)
            concat[cell_type] = tuple(live)
        return Genotype(space=space.name, cells=cells, concat=concat)
