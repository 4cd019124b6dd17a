"""Configurations written by another dnas: keys added since (a saved run lacks them) and keys removed
since (a saved run holds them) neither stop a run from resuming nor a grid from reusing it, as long as
the saved value means what this dnas does; a removed option asked for is a one-sentence error."""

from __future__ import annotations

import pytest
import torch
import yaml

import dnas
from dnas.config.resolve import resolve_config
from dnas.config.search import SearchConfig
from dnas.errors import DnasError
from dnas.runtime.rundir import config_differences


def test_a_key_one_side_lacks_holds_its_default():
    defaults = {"checkpoint_every": 100, "precision": "fp32"}  # a current key, and a removed one
    current = {"epochs": 3, "checkpoint_every": 100}
    assert config_differences({"epochs": 3}, current, defaults=defaults) == []  # saved before the key existed
    assert config_differences({"epochs": 3}, {**current, "checkpoint_every": 5}, defaults=defaults) \
        == ["checkpoint_every"]
    assert config_differences({**current, "precision": "fp32"}, current, defaults=defaults) == []  # removed since
    assert config_differences({**current, "precision": "bf16"}, current, defaults=defaults) == ["precision"]
    assert config_differences({"epochs": 3}, current) == ["checkpoint_every"]  # no defaults: a missing key differs


def test_search_defaults_for_comparison_hold_the_removed_keys_at_their_neutral_value():
    defaults = SearchConfig.comparison_defaults()
    assert defaults["precision"] == "fp32" and "precision" not in SearchConfig().to_dict()
    assert defaults["epochs"] == SearchConfig().epochs


def test_the_withdrawn_bf16_precision_is_a_user_error_and_fp32_is_accepted():
    with pytest.raises(DnasError, match=r"precision=bf16 is no longer available \(bf16 searches do not decide"):
        resolve_config({"space": "nb201"}, ["precision=bf16"])
    with pytest.raises(DnasError, match="precision=bf16 is no longer available"):
        resolve_config({"space": "nb201", "precision": "bf16"}, [])  # as in a config file
    cfg = resolve_config({"space": "nb201", "precision": "fp32"}, ["precision=fp32"])
    assert "precision" not in cfg.to_dict()
    with pytest.raises(DnasError, match="unknown override key 'precision.x'"):
        resolve_config({"space": "nb201"}, ["precision.x=1"])


def _rewrite_saved_config(out, change) -> None:
    """Apply ``change`` to the configuration of a finished run, in its checkpoint and config.yaml."""
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    change(state["config"])
    torch.save(state, out / "checkpoint.pt")
    saved = yaml.safe_load((out / "config.yaml").read_text())
    change(saved)
    (out / "config.yaml").write_text(yaml.safe_dump(saved))


def test_searches_saved_by_an_older_dnas_are_found_again(tmp_path, tiny):
    out = tmp_path / "run"
    first = dnas.search("nb201", "darts", out=out, epochs=1, overrides=list(tiny))

    def older(config: dict) -> None:
        del config["checkpoint_every"]  # a key that dnas did not have yet
        config["precision"] = "fp32"  # a key it had, at the value that means today's behaviour

    _rewrite_saved_config(out, older)
    # the same command finds the finished run and returns its result
    assert dnas.search("nb201", "darts", out=out, epochs=1, overrides=list(tiny)).genotype == first.genotype

    _rewrite_saved_config(out, lambda config: config.update(precision="bf16"))
    with pytest.raises(DnasError, match="precision"):
        dnas.search("nb201", "darts", out=out, epochs=1, overrides=list(tiny))
