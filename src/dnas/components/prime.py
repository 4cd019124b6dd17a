"""DARTS-PRIME clamp activation, Fisher-informed schedule, proximity and ADMM regularizers."""
