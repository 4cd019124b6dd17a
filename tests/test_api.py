"""The Python API, custom loops with callbacks, config replay and the metric sinks."""

from __future__ import annotations

import json

import pytest
import torch

import dnas
from dnas.bilevel.run import Search
from dnas.bilevel.step import SearchStep
from dnas.cli import main
from dnas.config.base import load_config_file
from dnas.config.resolve import resolve_config
from dnas.runtime.runner import Position

SMALL = {"epochs": 2, "batch_size": 16, "channels": 4, "layers": 1, "max_images": 160, "log_every": 2}


def test_search_returns_the_cell_results_and_metrics(tmp_path):
    found = dnas.search(space="nb201", method="darts", dataset="digits", out=tmp_path / "run", **SMALL)
    assert found.run_dir == tmp_path / "run"
    assert found.results == json.loads((tmp_path / "run" / "results.json").read_text())
    assert found.genotype.to_dict() == found.results["genotype"]
    assert [r["epoch"] for r in found.epochs] == [0, 1]
    assert found.config.method == "darts" and found.config.channels == 4


def test_search_without_out_uses_a_new_temporary_directory_and_resumes_with_it():
    first = dnas.search(dataset="digits", **SMALL, overrides={"estimator": "amended", "estimator.eta": 2e-1})
    assert first.run_dir.is_dir() and (first.run_dir / "checkpoint.pt").exists()
    assert first.config.estimator.params["eta"] == 0.2
    again = dnas.search(dataset="digits", out=first.run_dir, **SMALL,
                        overrides={"estimator": "amended", "estimator.eta": 0.2})
    assert again.genotype == first.genotype and again.results == first.results  # resumed: nothing recomputed


def test_api_equals_command_line(tmp_path, tiny):
    found = dnas.search(dataset="digits", out=tmp_path / "api", **SMALL)
    assert main(["search", "--dataset", "digits", "--epochs", "2", "--batch-size", "16", "--quiet", *tiny,
                 "--out", str(tmp_path / "cli")]) == 0
    cli = json.loads((tmp_path / "cli" / "results.json").read_text())
    assert cli["genotype"] == found.results["genotype"] and cli["strengths"] == found.results["strengths"]


def test_custom_loop_with_callbacks(tmp_path, tiny):
    cfg = resolve_config({"epochs": 2, "batch_size": 16}, tiny)
    steps, epochs = [], []
    search = Search(cfg, tmp_path / "run", progress=False, on_step=lambda s, r: steps.append(r["step"]),
                    on_epoch=lambda s, r: epochs.append((r["epoch"], s.epoch))).open()
    taken = 0
    while not search.done:
        search.step()
        taken += 1
    genotype = search.finish()
    assert taken == search.global_step == 2 * search.algorithm.steps_per_epoch
    assert steps == list(range(2, taken + 1, 2))
    assert epochs == [(0, 1), (1, 2)]  # the record of epoch e, seen when the search has moved to e + 1
    reference = Search(cfg, tmp_path / "ref", progress=False).run()
    assert genotype == reference
    assert json.loads((tmp_path / "run" / "results.json").read_text())["strengths"] == \
        json.loads((tmp_path / "ref" / "results.json").read_text())["strengths"]


def test_the_search_step_alone_is_the_whole_algorithm(tmp_path, tiny):
    """Driven by hand, without a run directory (no files, no checkpoints, no logs), the public search
    step reaches the bits a search run reaches, and its state round-trips through state_dict (the global
    random state is the runner's to keep)."""
    cfg = resolve_config({"method": "darts-prime", "epochs": 2, "batch_size": 16}, [*tiny, "max_images=400"])
    reference = Search(cfg, tmp_path / "ref", progress=False)
    genotype = reference.run()
    torch.manual_seed(cfg.seed)  # the runner's global random state at the start
    step = SearchStep(cfg)
    records, global_step = [], 0
    for epoch in range(cfg.epochs):
        step.begin_epoch(epoch)
        for i in range(step.steps_per_epoch):
            if (epoch, i) == (1, 2):  # a copy restored from the state continues as the original would
                state, rng = step.state_dict(), torch.get_rng_state()
                copy = SearchStep(cfg)
                copy.load_state_dict(state)
                torch.set_rng_state(rng)
                copy.begin_epoch(epoch)
                step = copy
            step.iterate(Position(epoch, i, global_step, cfg.epochs, step.steps_per_epoch))
            global_step += 1
        records.append(step.end_epoch(epoch))
    assert step.genotype() == genotype and records[-1]["genotype"] == genotype.to_dict()
    assert torch.equal(step.problem.alphas["cell"], reference.problem.alphas["cell"])
    assert all(torch.equal(p, q) for p, q in zip(step.problem.weights, reference.problem.weights, strict=True))
    assert list(tmp_path.iterdir()) == [tmp_path / "ref"]


def test_a_runs_config_yaml_replays_it(tmp_path, tiny, capsys):
    argv = ["search", "--method", "pr-darts", "--dataset", "digits", "--epochs", "2", "--batch-size", "16",
            "--quiet", *tiny, "a_lr=6e-4", "arch_regularizers.pr-darts.lambda1=0.02"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    assert main(["search", "--config", str(tmp_path / "a" / "config.yaml"), "--quiet",
                 "--out", str(tmp_path / "b")]) == 0
    a, b = (json.loads((tmp_path / n / "results.json").read_text()) for n in "ab")
    assert a["genotype"] == b["genotype"] and a["strengths"] == b["strengths"]
    assert (tmp_path / "a" / "config.yaml").read_text() == (tmp_path / "b" / "config.yaml").read_text()
    # a run folder works too, and the command line overrides the file
    assert main(["search", "--config", str(tmp_path / "a"), "--epochs", "1", "seed=3", "--quiet",
                 "--out", str(tmp_path / "c")]) == 0
    c = resolve_config(None, None, __import__("yaml").safe_load((tmp_path / "c" / "config.yaml").read_text()))
    assert (c.epochs, c.seed, c.a_lr, c.method) == (1, 3, 6e-4, "pr-darts")
    assert c.arch_regularizers[0].params["lambda1"] == 0.02


def test_a_hand_written_partial_config_file(tmp_path):
    (tmp_path / "my.yaml").write_text("method: lambda-darts\nepochs: 3\na_lr: 1e-3\nweight_regularizers: lambda\n")
    cfg = resolve_config(None, ["epochs=1"], load_config_file(tmp_path / "my.yaml"))
    assert (cfg.method, cfg.epochs, cfg.a_lr) == ("lambda-darts", 1, 1e-3)
    assert [c.name for c in cfg.weight_regularizers] == ["lambda"]


@pytest.mark.parametrize("text,message", [
    ("- a\n- b\n", "must hold a mapping"),
    ("epochs: [\n", "is not valid YAML"),
    ("colour: red\n", "unknown config key(s) 'colour'"),
    ("epochs: 1.5\n", "epochs takes a whole number"),
])
def test_bad_config_files(tmp_path, capsys, text, message):
    (tmp_path / "bad.yaml").write_text(text)
    assert main(["search", "--config", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "run")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_train_replays_its_config(tmp_path):
    settings = {"dataset": "digits", "epochs": 1, "channels": 4, "layers": 2, "batch_size": 32, "max_images": 96,
                "max_test_images": 64, "eval_batch_size": 64}
    first = dnas.train("|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|skip_connect~0|none~1|avg_pool_3x3~2|",
                       out=tmp_path / "a", **settings)
    assert 0.0 <= first.result["test_acc"] <= 1.0 and first.metrics[-1]["kind"] == "epoch"
    assert main(["train", "--config", str(tmp_path / "a" / "config.yaml"), "--quiet", "--out",
                 str(tmp_path / "b")]) == 0
    again = json.loads((tmp_path / "b" / "result.json").read_text())
    assert again["test_acc"] == first.result["test_acc"] and again["genotype"] == first.result["genotype"]


def test_train_accepts_a_genotype_object_and_query_looks_it_up(tmp_path):
    found = dnas.search(dataset="digits", out=tmp_path / "s", **SMALL)
    trained = dnas.train(found.genotype, dataset="digits", epochs=1, channels=4, layers=1, batch_size=32,
                         max_images=64, max_test_images=32, out=tmp_path / "t")
    assert trained.result["genotype"] == found.genotype.to_dict()
    table = tmp_path / "table.csv"
    arch = found.genotype.arch_str
    table.write_text(f"arch_str,cifar10-test\n{arch},91.5\n")
    assert dnas.query(found.genotype, table) == {"cifar10-test": 91.5}
    assert dnas.query(tmp_path / "s", table) == {"cifar10-test": 91.5}


def test_tensorboard_sink(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install dnas[tensorboard])")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found = dnas.search(dataset="digits", out=tmp_path / "run", log="tensorboard", **SMALL)
    events = EventAccumulator(str(found.run_dir / "tensorboard"), size_guidance={"histograms": 0}).Reload()
    tags = events.Tags()
    assert "step/train_loss" in tags["scalars"] and "strengths/cell" in tags["histograms"]
    steps = [e.step for e in events.Scalars("step/train_loss")]
    assert steps == [r["step"] for r in found.metrics if r["kind"] == "step"]
    assert (found.run_dir / "metrics.jsonl").exists()  # JSON lines are always written


def test_import_dnas_is_light():
    import subprocess
    import sys

    code = "import sys, dnas; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
