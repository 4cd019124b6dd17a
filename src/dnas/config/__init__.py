"""Typed configurations: checked values and config files (:mod:`.base`), a search's keys and slots
(:mod:`.search`) and their resolution from a method preset (:mod:`.resolve`), a training run's keys
and presets (:mod:`.train`)."""
