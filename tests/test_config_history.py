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
    defaults = {"checkpoint_every": 100, "turbo": False}  # a current key, and a removed one
    current = {"epochs": 3, "checkpoint_every": 100}
    assert config_differences({"epochs": 3}, current, defaults=defaults) == []  # saved before the key existed
    assert config_differences({"epochs": 3}, {**current, "checkpoint_every": 5}, defaults=defaults) \
        == ["checkpoint_every"]
    assert config_differences({**current, "turbo": False}, current, defaults=defaults) == []  # removed since
    assert config_differences({**current, "turbo": True}, current, defaults=defaults) == ["turbo"]
    assert config_differences({"epochs": 3}, current) == ["checkpoint_every"]  # no defaults: a missing key differs


@pytest.fixture
def removed_turbo(monkeypatch):
    """A key that an older dnas had and this one has not: ``turbo``, whose neutral value is false."""
    monkeypatch.setattr(SearchConfig, "removed", {"turbo": (False, "it did not pay")})


def test_search_defaults_for_comparison_hold_the_removed_keys_at_their_neutral_value(removed_turbo):
    defaults = SearchConfig.comparison_defaults()
    assert defaults["turbo"] is False and "turbo" not in SearchConfig().to_dict()
    assert defaults["epochs"] == SearchConfig().epochs


def test_a_removed_option_is_a_user_error_and_its_neutral_value_is_accepted(removed_turbo):
    with pytest.raises(DnasError, match=r"turbo=True is no longer available \(it did not pay\)"):
        resolve_config({"space": "nb201"}, ["turbo=true"])
    with pytest.raises(DnasError, match="turbo=True is no longer available"):
        resolve_config({"space": "nb201", "turbo": True}, [])  # as in a config file
    cfg = resolve_config({"space": "nb201", "turbo": False}, ["turbo=false"])
    assert "turbo" not in cfg.to_dict()
    with pytest.raises(DnasError, match="unknown override key 'turbo.x'"):
        resolve_config({"space": "nb201"}, ["turbo.x=1"])


def _rewrite_saved_config(out, change) -> None:
    """Apply ``change`` to the configuration of a finished run, in its checkpoint and config.yaml."""
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    change(state["config"])
    torch.save(state, out / "checkpoint.pt")
    saved = yaml.safe_load((out / "config.yaml").read_text())
    change(saved)
    (out / "config.yaml").write_text(yaml.safe_dump(saved))


def test_searches_saved_by_an_older_dnas_are_found_again(tmp_path, tiny, removed_turbo):
    out = tmp_path / "run"
    first = dnas.search("nb201", "darts", out=out, epochs=1, overrides=list(tiny))

    def older(config: dict) -> None:
        del config["checkpoint_every"]  # a key that dnas did not have yet
        config["turbo"] = False  # a key it had, at the value that means today's behaviour

    _rewrite_saved_config(out, older)
    # the same command finds the finished run and returns its result
    assert dnas.search("nb201", "darts", out=out, epochs=1, overrides=list(tiny)).genotype == first.genotype

    _rewrite_saved_config(out, lambda config: config.update(turbo=True))
    with pytest.raises(DnasError, match="turbo"):
        dnas.search("nb201", "darts", out=out, epochs=1, overrides=list(tiny))


def test_a_component_parameter_added_since_takes_its_default_in_a_saved_run(tmp_path, tiny):
    """darts-2nd's estimator gained ``hvp`` (default ``fd``, what it always did): a run saved without
    it resumes and is reused by a grid; saved with another value, it is refused."""
    out = tmp_path / "cmp"
    first = dnas.compare("nb201", ["darts-2nd"], seeds=[0], out=out, epochs=1, overrides=list(tiny), progress=False)
    run = out / "runs" / "darts-2nd-s0"

    def older(config: dict) -> None:
        del config["estimator"]["params"]["hvp"]

    _rewrite_saved_config(run, older)
    assert dnas.search("nb201", "darts-2nd", out=run, epochs=1, overrides=list(tiny)).genotype.arch_str \
        == first.records[0].arch
    again = dnas.compare("nb201", ["darts-2nd"], seeds=[0], out=out, epochs=1, overrides=list(tiny), progress=False)
    assert [(r.status, r.arch) for r in again.records] == [("ok", first.records[0].arch)]

    _rewrite_saved_config(run, lambda config: config["estimator"]["params"].update(hvp="exact"))
    with pytest.raises(DnasError, match="estimator"):
        dnas.search("nb201", "darts-2nd", out=run, epochs=1, overrides=list(tiny))
    with pytest.raises(DnasError, match="estimator"):
        dnas.compare("nb201", ["darts-2nd"], seeds=[0], out=out, epochs=1, overrides=list(tiny), progress=False)
