"""Published cells of the DARTS space and of the DARTS recurrent space, by name, each with the place it
was read from.

``dnas train DARTS_V2`` trains one of these; :func:`get_published` accepts the name in any case
and with ``-`` for ``_`` (``darts-v2``). Every genotype below was transcribed from the authors'
``genotypes.py`` named in its ``source`` and checked against it pair by pair; ``reported`` is the
figure the paper gives for the CIFAR-10 evaluation network (20 cells, C=36) or the Penn Treebank
model (850 units), which ``tests/test_evalnet.py`` and ``tests/test_recurrent.py`` compare with the
parameter count of the network dnas builds.

CNN pairs are ``(op, input)`` with inputs 0 and 1 the two previous cells and 2.. the earlier
intermediate nodes, two pairs per intermediate node, exactly as in the DARTS code. Recurrent pairs
(``*_RNN``) are ``(activation, input)``, one per intermediate node, input 0 the cell's initial state.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from dnas.errors import DnasError
from dnas.runtime.files import CONFIG, GENOTYPE
from dnas.spaces.genotype import Genotype

CONCAT = (2, 3, 4, 5)


@dataclass(frozen=True)
class PublishedGenotype:
    name: str
    genotype: Genotype
    source: str  # repository, file and commit the pairs were read from
    reference: str  # the paper
    reported: str  # what the paper reports for the CIFAR-10 evaluation network


def _darts(normal: str, reduce: str) -> Genotype:
    """A DARTS-space genotype from ``"op:input op:input ..."`` strings (8 pairs per cell)."""

    def pairs(text: str) -> tuple[tuple[str, int], ...]:
        return tuple((op, int(src)) for op, src in (item.split(":") for item in text.split()))

    return Genotype(space="darts", cells={"normal": pairs(normal), "reduce": pairs(reduce)},
                    concat={"normal": CONCAT, "reduce": CONCAT})


_PUBLISHED = [
    PublishedGenotype(
        "DARTS_V1",
        _darts(
            "sep_conv_3x3:1 sep_conv_3x3:0 skip_connect:0 sep_conv_3x3:1 "
            "skip_connect:0 sep_conv_3x3:1 sep_conv_3x3:0 skip_connect:2",
            "max_pool_3x3:0 max_pool_3x3:1 skip_connect:2 max_pool_3x3:0 "
            "max_pool_3x3:0 skip_connect:2 skip_connect:2 avg_pool_3x3:0",
        ),
        "quark0/darts cnn/genotypes.py (DARTS_V1; the commit 8876e793 names the same pairs DARTS); "
        "identical in yuhuixu1993/PC-DARTS and chenxin061/pdarts genotypes.py",
        "Liu, Simonyan, Yang: DARTS: Differentiable Architecture Search, ICLR 2019 (first order)",
        "CIFAR-10 test error 3.00 %, 3.3M params (DARTS paper, Table 1)",
    ),
    PublishedGenotype(
        "DARTS_V2",
        _darts(
            "sep_conv_3x3:0 sep_conv_3x3:1 sep_conv_3x3:0 sep_conv_3x3:1 "
            "sep_conv_3x3:1 skip_connect:0 skip_connect:0 dil_conv_3x3:2",
            "max_pool_3x3:0 max_pool_3x3:1 skip_connect:2 max_pool_3x3:1 "
            "max_pool_3x3:0 skip_connect:2 skip_connect:2 max_pool_3x3:1",
        ),
        "quark0/darts cnn/genotypes.py (DARTS_V2, the code's default DARTS); identical in "
        "yuhuixu1993/PC-DARTS genotypes.py@283b086c and chenxin061/pdarts genotypes.py@b1575e10",
        "Liu, Simonyan, Yang: DARTS: Differentiable Architecture Search, ICLR 2019 (second order)",
        "CIFAR-10 test error 2.76 +- 0.09 %, 3.349M params; ImageNet mobile 26.7 % top-1, 4.719M params "
        "(quark0/darts README.md), 574M mult-adds (DARTS paper, Table 2)",
    ),
    PublishedGenotype(
        "PRDARTS",
        _darts(
            "skip_connect:0 sep_conv_3x3:1 dil_conv_3x3:2 sep_conv_3x3:0 "
            "dil_conv_3x3:3 sep_conv_3x3:1 dil_conv_3x3:4 dil_conv_3x3:1",
            "avg_pool_3x3:0 dil_conv_5x5:1 sep_conv_3x3:0 dil_conv_5x5:2 "
            "sep_conv_5x5:1 dil_conv_3x3:3 dil_conv_5x5:4 dil_conv_5x5:1",
        ),
        "salesforce/PR-DARTS PRDARTS_eval/genotypes.py@2c0efa1f (PRDARTS)",
        "Zhou, Xiong, Socher, Hoi: Theory-Inspired Path-Regularized Differential Network Architecture "
        "Search, NeurIPS 2020",
        "CIFAR-10 test error 2.32 %, 3.4M params; ImageNet 24.1 % top-1, 4.98M params, 543M mult-adds "
        "(PR-DARTS paper, Tables 1 and 2)",
    ),
    PublishedGenotype(
        "PC_DARTS",
        _darts(
            "sep_conv_3x3:1 skip_connect:0 sep_conv_3x3:0 dil_conv_3x3:1 "
            "sep_conv_5x5:0 sep_conv_3x3:1 avg_pool_3x3:0 dil_conv_3x3:1",
            "sep_conv_5x5:1 max_pool_3x3:0 sep_conv_5x5:1 sep_conv_5x5:2 "
            "sep_conv_3x3:0 sep_conv_3x3:3 sep_conv_3x3:1 sep_conv_3x3:2",
        ),
        "yuhuixu1993/PC-DARTS genotypes.py@283b086c (PC_DARTS_cifar)",
        "Xu et al.: PC-DARTS: Partial Channel Connections for Memory-Efficient Architecture Search, ICLR 2020",
        "3.6M params; CIFAR-10 test error 2.81 % as quoted in PR-DARTS Table 1",
    ),
    PublishedGenotype(
        "PDARTS",
        _darts(
            "skip_connect:0 dil_conv_3x3:1 skip_connect:0 sep_conv_3x3:1 "
            "sep_conv_3x3:1 sep_conv_3x3:3 sep_conv_3x3:0 dil_conv_5x5:4",
            "avg_pool_3x3:0 sep_conv_5x5:1 sep_conv_3x3:0 dil_conv_5x5:2 "
            "max_pool_3x3:0 dil_conv_3x3:1 dil_conv_3x3:1 dil_conv_5x5:3",
        ),
        "chenxin061/pdarts genotypes.py@b1575e10 (PDARTS)",
        "Chen, Xie, Wu, Tian: Progressive Differentiable Architecture Search, ICCV 2019",
        "CIFAR-10 test error 2.50 %, 3.4M params, as quoted in PR-DARTS Table 1",
    ),
]



def _recurrent(text: str, concat: tuple[int, ...] = tuple(range(1, 9))) -> Genotype:
    """A recurrent-space genotype from ``"activation:input ..."`` (one pair per intermediate node)."""
    pairs = tuple((op, int(src)) for op, src in (item.split(":") for item in text.split()))
    return Genotype(space="rnn", cells={"recurrent": pairs}, concat={"recurrent": concat})


_PUBLISHED_RECURRENT = [
    PublishedGenotype(
        "DARTS_V1_RNN",
        _recurrent("relu:0 relu:1 tanh:2 relu:3 relu:4 identity:1 relu:5 relu:1"),
        "quark0/darts rnn/genotypes.py (DARTS_V1; identical in k8lion/DARTS-PRIME src/genotypes_rnn.py and "
        "dr-faustus/Lambda-DARTS sota/rnn/genotypes.py)",
        "Liu, Simonyan, Yang: DARTS: Differentiable Architecture Search, ICLR 2019 (first order, by analogy "
        "with the CNN genotypes: the file does not say)",
        "PTB valid / test perplexity 60.2 / 57.6, 23M params (DARTS paper, Table 2, first order)",
    ),
    PublishedGenotype(
        "DARTS_V2_RNN",
        _recurrent("sigmoid:0 relu:1 relu:1 identity:1 tanh:2 sigmoid:5 tanh:3 relu:5"),
        "quark0/darts rnn/genotypes.py (DARTS_V2, the code's default DARTS for train.py --arch)",
        "Liu, Simonyan, Yang: DARTS: Differentiable Architecture Search, ICLR 2019 (second order)",
        "PTB valid / test perplexity 58.1 / 55.7, 23M params (DARTS paper, Table 2); 55.68 test "
        "(quark0/darts README.md, pretrained model)",
    ),
    PublishedGenotype(
        "ENAS_RNN",
        _recurrent("tanh:0 tanh:1 relu:1 tanh:3 tanh:3 relu:3 relu:4 relu:7 relu:8 relu:8 relu:8",
                   (2, 5, 6, 9, 10, 11)),
        "quark0/darts rnn/genotypes.py (ENAS: the ENAS cell in DARTS' notation, 11 nodes)",
        "Pham, Guan, Zoph, Le, Dean: Efficient Neural Architecture Search via Parameter Sharing, ICML 2018",
        "PTB valid / test perplexity 60.8 / 58.6, 24M params when trained with DARTS' setup (DARTS paper, Table 2)",
    ),
]

PUBLISHED: dict[str, PublishedGenotype] = {p.name: p for p in [*_PUBLISHED, *_PUBLISHED_RECURRENT]}


def _normalize(name: str) -> str:
    return name.strip().upper().replace("-", "_")


def list_published() -> list[str]:
    return list(PUBLISHED)


def find_published(name: str) -> PublishedGenotype | None:
    """The published genotype called ``name`` (case-insensitive, ``-`` for ``_``), or None."""
    return PUBLISHED.get(_normalize(name))


def get_published(name: str) -> PublishedGenotype:
    found = find_published(name)
    if found is None:
        raise DnasError(f"no published genotype named {name!r}; known: {', '.join(PUBLISHED)}")
    return found


# ------------------------------------------------------------------------------- any genotype spec


@dataclass(frozen=True)
class ResolvedGenotype:
    genotype: Genotype
    label: str  # short name, used for default run directories
    source: str  # where the cell came from: a published source, a file, or "NB201 arch string"
    search_dir: Path | None = None  # the search run that wrote the genotype.json (it has a config.yaml)


def resolve_genotype(spec: str) -> ResolvedGenotype:
    """A genotype from what a user typed: the path of a ``genotype.json`` (or of the search run
    folder holding one), an NB201 arch string, or a published name (see :data:`PUBLISHED`)."""
    path = Path(spec).expanduser()
    if path.exists():
        file = path / GENOTYPE if path.is_dir() else path
        genotype = Genotype.load(file)
        run_dir = file.parent if (file.parent / CONFIG).is_file() else None
        label = file.parent.resolve().name if file.name == GENOTYPE else file.stem
        return ResolvedGenotype(genotype, label or "genotype", str(file), run_dir)
    text = spec.strip()
    if text.startswith("|"):
        genotype = Genotype.from_arch_str(text)
        digest = hashlib.sha1(genotype.arch_str.encode()).hexdigest()[:8]
        return ResolvedGenotype(genotype, f"nb201-{digest}", "NB201 arch string")
    published = find_published(text)
    if published is not None:
        return ResolvedGenotype(published.genotype, published.name.lower(), published.source)
    if "/" in text or "\\" in text or text.endswith(".json"):
        raise DnasError(f"genotype file {spec!r} does not exist; give the genotype.json of a search (or its run "
                        f"folder), a published genotype ({', '.join(PUBLISHED)}) or an NB201 arch string")
    raise DnasError(
        f"{spec!r} is neither a genotype.json file, a published genotype ({', '.join(PUBLISHED)}) nor an NB201 "
        "arch string ('|op~0|+|op~0|op~1|+|op~0|op~1|op~2|')"
    )
