"""Extending dnas: a new op, a search space with it, and an architecture regularizer of one's own.

    python examples/custom_space.py        # a few seconds: search, derive and print the cell

``register()`` adds the three to dnas. The script does not call it itself: the search names the
plugin module ``my_plugin`` (beside this file), which calls it when dnas imports it, and the run's
``config.yaml`` records the plugin, so that a replay, a resume or ``dnas report`` imports it again.
The command line uses the same plugin: ``dnas --plugin my_plugin search --space nb201-gelu ...``.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

import dnas
from dnas.components import ARCH_REGULARIZERS, ArchRegularizer
from dnas.spaces.nb201 import NB201

OPS = ("none", "skip_connect", "nor_conv_3x3", "avg_pool_3x3", "gelu_sep_conv_5x5")


class GeluSepConv(nn.Sequential):
    """GELU, then a depthwise 5x5 convolution (strided), a pointwise convolution and BatchNorm."""

    def __init__(self, channels: int, stride: int, affine: bool):
        super().__init__(nn.GELU(), nn.Conv2d(channels, channels, 5, stride, 2, groups=channels, bias=False),
                         nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels, affine=affine))


class EdgeEntropy(ArchRegularizer):
    r"""The mean entropy of the edges' op weights, added to the validation loss:

    .. math:: R(\alpha) = \lambda \frac{1}{|E|} \sum_{e \in E} -\sum_o w_{e,o} \log w_{e,o},
              \quad w_e = \mathrm{softmax}(\alpha_e)

    (averaged over the cell types). Minimising it pushes every edge towards a single op, so that the
    derived cell is the one the supernet was trained as.
    """

    def __init__(self, *, weight: float = 0.1):  # a hyper-parameter: arch_regularizers.edge-entropy.weight
        self.weight = weight

    def __call__(self, problem, activated, ctx=None) -> dict[str, torch.Tensor]:
        entropies = [-(w * w.clamp_min(1e-12).log()).sum(dim=1).mean() for w in activated.values()]
        return {"edge-entropy": self.weight * torch.stack(entropies).mean()}


def register() -> None:
    """Register the op, the space (NAS-Bench-201's cell with the op set :data:`OPS`) and the regularizer."""
    dnas.register_op("gelu_sep_conv_5x5", GeluSepConv, parameter_free=False)
    cell = dnas.CellTopology(num_inputs=1, num_nodes=3, edge_ops=(OPS,) * 6)
    dnas.register_space(dataclasses.replace(NB201, name="nb201-gelu", cells={"cell": cell},
                                            description="NAS-Bench-201's cell with a GELU 5x5 separable conv"))
    ARCH_REGULARIZERS.register("edge-entropy")(EdgeEntropy)


if __name__ == "__main__":
    found = dnas.search(space="nb201-gelu", method="darts", dataset="digits", plugins=["my_plugin"],
                        epochs=1, batch_size=16, channels=4, layers=1, max_images=160,
                        overrides={"arch_regularizers": "edge-entropy", "arch_regularizers.edge-entropy.weight": 0.5})
    print(found.genotype.describe())
    print(f"parameter-free ops: {found.genotype.count_parameter_free()}; run directory: {found.run_dir}")
