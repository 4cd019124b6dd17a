"""Components of different papers in one search, through overrides.

Every slot of the search loop (activation, estimator, schedule, regularizers, ...) can be
replaced on top of any preset. Here: PR-DARTS' hard-concrete gates with Amended-DARTS' estimator,
and Λ-DARTS' alignment regularizer under DARTS-PRIME's Fisher schedule. The same as
`dnas search --method pr-darts estimator=amended estimator.eta=0.05` on the command line. A slot
set this way takes its component's defaults (the `amended` estimator's products are finite
differences; the `amended-darts` preset sets `estimator.hvp=exact`).

    python examples/combine_components.py
"""

import dnas

TINY = {"dataset": "digits", "epochs": 1, "batch_size": 16, "channels": 4, "layers": 1, "max_images": 64}

combinations = {
    "PR-DARTS gates + Amended estimator": ("pr-darts", {"estimator": "amended", "estimator.eta": 0.05}),
    "Λ-DARTS + Fisher schedule": ("lambda-darts", {"schedule": "fisher", "schedule.f": 2}),
}

for name, (method, overrides) in combinations.items():
    found = dnas.search(space="nb201", method=method, overrides=overrides, **TINY)
    cfg = found.config  # the resolved configuration: every slot and its hyper-parameters
    print(f"{name}: {found.genotype.describe()}")
    for slot in ("activation", "estimator", "schedule", "weight_regularizers"):
        print(f"    {slot}: {getattr(cfg, slot)}")
