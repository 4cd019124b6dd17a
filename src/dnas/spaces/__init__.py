"""Search spaces: DARTS CNN, NAS-Bench-201, the RobustDARTS spaces S1-S4 and the DARTS recurrent cell."""

from dnas.spaces import darts, nb201, recurrent  # noqa: F401  (register the built-in spaces)
from dnas.spaces.base import PARAMETER_FREE_OPS, SPACES, CellTopology, SearchSpace, get_space, list_spaces
from dnas.spaces.genotype import Genotype

__all__ = [
    "PARAMETER_FREE_OPS",
    "SPACES",
    "CellTopology",
    "Genotype",
    "SearchSpace",
    "get_space",
    "list_spaces",
]
