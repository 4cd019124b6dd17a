import pytest
import yaml

from dnas.bilevel.methods import METHODS
from dnas.config.resolve import resolve_config
from dnas.config.search import SearchConfig
from dnas.errors import DnasError


def test_defaults_follow_darts():
    cfg = resolve_config({"space": "darts"})
    assert (cfg.w_lr, cfg.w_lr_min, cfg.w_momentum, cfg.w_weight_decay, cfg.grad_clip) == (0.025, 0.001, 0.9, 3e-4, 5.0)
    assert (cfg.a_lr, cfg.a_beta1, cfg.a_beta2, cfg.a_weight_decay) == (3e-4, 0.5, 0.999, 1e-3)
    assert cfg.train_portion == 0.5 and cfg.batch_size == 64 and cfg.epochs == 50
    assert cfg.activation.name == "softmax" and cfg.estimator.name == "first-order"
    assert cfg.discretizer.name == "darts"
    nb201 = resolve_config()  # AutoDL's NAS-Bench-201 DARTS-V1 (tests/test_presets.py has the full tables)
    assert nb201.discretizer.name == "argmax" and (nb201.w_weight_decay, nb201.w_nesterov) == (5e-4, True)


def test_overrides_and_component_params():
    cfg = resolve_config({"space": "darts", "epochs": 3}, ["w_lr=0.05", "schedule=every-k", "schedule.k=4",
                                                           "seed=7", "flip=false"])
    assert cfg.epochs == 3 and cfg.w_lr == 0.05 and cfg.seed == 7 and cfg.flip is False
    assert cfg.schedule.name == "every-k" and cfg.schedule.params == {"k": 4, "order": "arch-first"}
    assert cfg.activation.params == {"init_std": 1e-3, "exclude": ""}  # defaults are filled in


def test_space_and_method_may_come_as_overrides():
    assert resolve_config(None, ["space=s2"]).space == "s2"


@pytest.mark.parametrize("overrides,message", [
    (["colour=red"], "unknown override key 'colour'"),
    (["estimator=magic"], "unknown estimator 'magic'; choose one of: amended, first-order"),
    (["schedule=every-k", "schedule.j=3"], "schedule 'every-k' has no parameter j; it takes: k"),
    (["epochs=ten"], "epochs takes a number"),
    (["epochs=0"], "epochs must be at least 1"),
    (["train_portion=1.5"], "train_portion must lie strictly between 0 and 1"),
    (["arch_regularizers.prox.rho=1"], "arch_regularizers has no member 'prox'"),
    (["w_lr.x=1"], "is not a component"),
    (["nonsense"], "is not of the form key=value"),
    (["space=moon"], "unknown search space 'moon'"),
    (["method=magic"], "unknown method 'magic'"),
])
def test_bad_overrides_are_clear_errors(overrides, message):
    with pytest.raises(DnasError, match=message):
        resolve_config(None, overrides)


def test_odd_channels_rejected_on_darts():
    with pytest.raises(DnasError, match="even number of channels"):
        resolve_config({"space": "darts"}, ["channels=5"])


def test_yaml_round_trip():
    cfg = resolve_config({"space": "darts"}, ["schedule=every-k"])
    again = SearchConfig.from_dict(yaml.safe_load(cfg.to_yaml()))
    assert again == cfg
    with pytest.raises(DnasError, match="unknown config key"):
        SearchConfig.from_dict({"bogus": 1})


def test_every_method_resolves_on_every_space():
    for method in METHODS.names():
        for space in ("darts", "nb201", "s1", "s2", "s3", "s4"):
            cfg = resolve_config({"space": space, "method": method})
            assert cfg.method == method


def test_numbers_in_exponent_notation_are_numbers():
    cfg = resolve_config({"space": "darts"}, ["a_lr=3e-4", "w_weight_decay=5E-4", "estimator=amended",
                                              "estimator.fd_radius=1e-3"])
    assert (cfg.a_lr, cfg.w_weight_decay, cfg.estimator.params["fd_radius"]) == (3e-4, 5e-4, 1e-3)
