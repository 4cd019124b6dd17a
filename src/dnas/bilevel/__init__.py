"""The search algorithm: the bilevel problem (:mod:`.problem`), exact and finite-difference
curvature (:mod:`.autodiff`), one iteration without I/O (:mod:`.step`), the method presets
(:mod:`.methods`) and a search run in a run directory (:mod:`.run`)."""
