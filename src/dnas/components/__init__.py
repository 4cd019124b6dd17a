"""The slots of the search loop: activation, schedule, estimator, regularizers, discretizer, perturbation,
auxiliary, progression, guard.

Each slot has a public registry (:data:`SLOTS` maps the slot's config key to it). A component of
one's own subclasses the slot's base class and registers under a name, from any module::

    from dnas.components import ARCH_REGULARIZERS, ArchRegularizer

    @ARCH_REGULARIZERS.register("entropy")
    class Entropy(ArchRegularizer):
        def __init__(self, *, weight: float = 0.01):   # keyword-only with defaults: its hyper-parameters
            self.weight = weight

        def __call__(self, problem, activated, ctx=None):
            ...                                        # {"entropy": tensor}, added to the validation loss

after which ``arch_regularizers=entropy arch_regularizers.entropy.weight=0.1`` selects it (on the
command line with ``dnas --plugin MODULE``). A name is registered once per slot.
"""

from typing import Any

from dnas.components.activations import ACTIVATIONS, Activation
from dnas.components.auxiliary import AUXILIARIES, Auxiliary
from dnas.components.discretizers import DISCRETIZERS, Discretizer
from dnas.components.estimators import ESTIMATORS, Estimator
from dnas.components.guards import GUARDS, Guard
from dnas.components.progression import PROGRESSIONS, Progression
from dnas.components.regularizers import (
    ARCH_REGULARIZERS,
    WEIGHT_REGULARIZERS,
    ArchRegularizer,
    WeightRegularizer,
)
from dnas.components.schedules import SCHEDULES, Schedule
from dnas.components.sdarts import PERTURBATIONS, Perturbation
from dnas.registry import Registry

# implementations that register themselves in the registries above
from dnas.components import beta_darts, drnas, fair_darts, gdas, hard_concrete, lambda_darts, pr_darts, prime  # noqa: E402,F401  isort: skip

# each registry holds the classes of its own slot, hence Any
SLOTS: dict[str, Registry[Any]] = {
    "activation": ACTIVATIONS,
    "schedule": SCHEDULES,
    "estimator": ESTIMATORS,
    "discretizer": DISCRETIZERS,
    "weight_regularizers": WEIGHT_REGULARIZERS,
    "arch_regularizers": ARCH_REGULARIZERS,
    "perturbation": PERTURBATIONS,
    "auxiliary": AUXILIARIES,
    "progression": PROGRESSIONS,
    "guard": GUARDS,
}

__all__ = [
    "ACTIVATIONS",
    "ARCH_REGULARIZERS",
    "AUXILIARIES",
    "DISCRETIZERS",
    "ESTIMATORS",
    "GUARDS",
    "PERTURBATIONS",
    "PROGRESSIONS",
    "SCHEDULES",
    "SLOTS",
    "WEIGHT_REGULARIZERS",
    "Activation",
    "ArchRegularizer",
    "Auxiliary",
    "Discretizer",
    "Estimator",
    "Guard",
    "Perturbation",
    "Progression",
    "Schedule",
    "WeightRegularizer",
]
