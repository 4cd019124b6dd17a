"""Measurements of a search: gradient alignment across cells (:mod:`.alignment`), the dominant
Hessian eigenvalue (:mod:`.hessian`), decision margins and entropies (:mod:`.convergence`) and
operation counts (:mod:`.flops`)."""
