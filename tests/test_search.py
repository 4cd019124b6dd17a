"""End-to-end searches on the embedded digits dataset, resume, and user errors."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from dnas.bilevel.run import Search
from dnas.bilevel.step import SearchStep
from dnas.config.resolve import resolve_config
from dnas.errors import DnasError, NonFiniteLossError
from dnas.runtime.environment import source_revision
from dnas.runtime.files import read_metrics
from dnas.runtime.runner import Position
from dnas.spaces import Genotype


def _run(tiny_search, space="nb201", epochs=2, extra=(), name="run"):
    layers = ["layers=3"] if space != "nb201" else []
    search = tiny_search(space=space, epochs=epochs, name=name, overrides=[*layers, *extra])
    genotype = search.run()
    return search, genotype


def _records(path, kind):
    return read_metrics(path, kind)


@pytest.mark.parametrize("space", ["nb201", "darts", "s3"])
def test_search_writes_the_run_directory(tiny_search, tmp_path, space):
    search, genotype = _run(tiny_search, space)
    out = tmp_path / "run"
    assert {"config.yaml", "env.json", "metrics.jsonl", "checkpoint.pt", "genotype.json", "results.json"} <= {
        p.name for p in out.iterdir()}
    assert yaml.safe_load((out / "config.yaml").read_text())["space"] == space
    assert json.loads((out / "env.json").read_text())["torch"] == torch.__version__
    assert Genotype.load(out / "genotype.json") == genotype
    steps, epochs = _records(out, "step"), _records(out, "epoch")
    assert len(epochs) == 2 and steps and all(0 <= r["train_acc"] <= 1 for r in steps)
    assert "val_loss" in steps[0] and steps[-1]["arch_steps"] == search.global_step
    assert any(k.startswith("alignment.") for r in steps for k in r)
    data = json.loads((out / "genotype.json").read_text())
    if space == "nb201":
        assert Genotype.from_arch_str(data["arch_str"]) == genotype
    else:
        assert len(data["normal"]) == 8 and data["reduce_concat"] == [2, 3, 4, 5]


def test_alphas_move_and_weights_learn(tiny_search, tmp_path):
    search, _ = _run(tiny_search, epochs=3, extra=["w_lr=0.1", "a_lr=0.01"])
    alpha = search.problem.alphas["cell"].detach()
    assert alpha.abs().max() > 0.01  # the architecture step changed alpha
    steps = _records(tmp_path / "run", "step")
    assert steps[-1]["train_loss"] < steps[0]["train_loss"]


def test_golden_values_of_a_seeded_search(tiny_search, tmp_path):
    """Pins the numbers of a short seeded search: any change to the math of the loop shows up here."""
    # DARTS' own protocol on nb201 (the darts preset there is AutoDL's: weight step first, nesterov, wd 5e-4)
    search, genotype = _run(tiny_search, epochs=1, extra=["seed=3", "schedule.order=arch-first", "w_nesterov=false",
                                                      "w_weight_decay=3e-4"])
    first = _records(tmp_path / "run", "step")[0]
    alpha = search.problem.alphas["cell"].detach()
    assert first["train_loss"] == pytest.approx(GOLDEN["train_loss"], rel=1e-4)
    assert first["val_loss"] == pytest.approx(GOLDEN["val_loss"], rel=1e-4)
    assert float(alpha.sum()) == pytest.approx(GOLDEN["alpha_sum"], rel=1e-4, abs=1e-6)
    assert float(alpha.abs().sum()) == pytest.approx(GOLDEN["alpha_abs"], rel=1e-4)


GOLDEN = {"train_loss": 2.4007277488708496, "val_loss": 2.3250010013580322, "alpha_sum": -0.007252555340528488,
          "alpha_abs": 0.02221262827515602}  # torch 2.13.0 CPU, 1 thread


def test_same_seed_same_result(tiny_search, tmp_path):
    a, ga = _run(tiny_search, name="a")
    b, gb = _run(tiny_search, name="b")
    assert ga == gb
    assert torch.equal(a.problem.alphas["cell"], b.problem.alphas["cell"])


def test_interrupted_search_resumes_to_the_same_result(tiny_search, tmp_path, interrupt_at):
    reference, g_ref = _run(tiny_search, epochs=2, name="ref", extra=["checkpoint_every=3"])
    interrupt_at(Search, 7)
    with pytest.raises(DnasError, match="interrupted; the search is saved"):
        _run(tiny_search, epochs=2, name="resumed", extra=["checkpoint_every=3"])
    interrupt_at(Search, None)
    resumed, g_res = _run(tiny_search, epochs=2, name="resumed", extra=["checkpoint_every=3"])
    assert g_res == g_ref
    for key in ("cell",):
        assert torch.equal(resumed.problem.alphas[key], reference.problem.alphas[key])
    for p, q in zip(resumed.problem.weights, reference.problem.weights, strict=True):
        assert torch.equal(p, q)
    ref_lines = (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()
    res_lines = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    strip = [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in ref_lines]
    assert strip == [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in res_lines]


def _cli(out, tiny):
    return [sys.executable, "-m", "dnas", "search", "--quiet", "--space", "nb201", "--epochs", "3",
            "--batch-size", "16", "--out", str(out), *tiny, "checkpoint_every=2"]


@pytest.mark.slow
def test_killed_process_resumes_to_the_same_architecture(tmp_path, tiny):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    subprocess.run(_cli(tmp_path / "ref", tiny), env=env, check=True, capture_output=True)
    out = tmp_path / "killed"
    proc = subprocess.Popen(_cli(out, tiny), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not (out / "checkpoint.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / "checkpoint.pt").exists()
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert not state["finished"], "the process ended before it could be killed mid-run"
    done = subprocess.run(_cli(out, tiny), env=env, check=True, capture_output=True, text=True)
    assert "nb201 cell:" in done.stdout
    ref = torch.load(tmp_path / "ref" / "checkpoint.pt", weights_only=True)
    new = torch.load(out / "checkpoint.pt", weights_only=True)
    assert torch.equal(ref["alphas"]["cell"], new["alphas"]["cell"])
    genotype = json.loads((out / "genotype.json").read_text())
    assert genotype == json.loads((tmp_path / "ref" / "genotype.json").read_text())


def test_finished_run_is_not_recomputed(tiny_search, tmp_path):
    search, genotype = _run(tiny_search, epochs=1)
    before = (tmp_path / "run" / "metrics.jsonl").read_text()
    again, genotype_again = _run(tiny_search, epochs=1)
    assert genotype_again == genotype and (tmp_path / "run" / "metrics.jsonl").read_text() == before


def test_corrupt_checkpoint_is_reported_and_kept(tiny_search, tmp_path):
    _run(tiny_search, epochs=1)
    ckpt = tmp_path / "run" / "checkpoint.pt"
    ckpt.write_bytes(b"this is not a checkpoint")
    with pytest.raises(DnasError, match="unreadable or corrupt; delete it|unreadable or corrupt"):
        _run(tiny_search, epochs=1)
    assert ckpt.read_bytes() == b"this is not a checkpoint"


def test_resume_with_other_config_is_refused(tiny_search, tmp_path):
    _run(tiny_search, epochs=1)
    files = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    with pytest.raises(DnasError, match=r"different configuration \(epochs\)"):
        _run(tiny_search, epochs=2)
    assert files == {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}


def test_foreign_out_dir_is_refused(tiny_search, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(DnasError, match="already holds other files"):
        _run(tiny_search, epochs=1)
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"


def test_missing_dataset_path(tiny_search, tmp_path):
    with pytest.raises(DnasError, match="No dataset named or found at"):
        _run(tiny_search, extra=[f"dataset={tmp_path / 'nowhere'}"])


def test_a_split_smaller_than_a_batch_is_named(tiny_search, tmp_path):
    # the Fisher schedule rebalances the split to 10:1, so 40 images leave 4 for the val part
    with pytest.raises(DnasError, match=r"the val part of the search split holds 4 images .* batch_size 16"):
        _run(tiny_search, extra=["max_images=40", "schedule=fisher"])
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_checkpoint(tiny_search, tmp_path, monkeypatch):
    _run(tiny_search, epochs=1, extra=["checkpoint_every=2"])
    good = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    real = torch.nn.functional.cross_entropy
    monkeypatch.setattr(torch.nn.functional, "cross_entropy", lambda *a, **k: real(*a, **k) * float("nan"))
    with pytest.raises(NonFiniteLossError, match="loss became non-finite"):
        _run(tiny_search, epochs=1, name="nan", extra=["checkpoint_every=2"])
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == good
    assert not (tmp_path / "nan" / "checkpoint.pt").exists()


def test_epoch_records_carry_benchmark_lookups_and_hessian_eigenvalue(tiny_search, tmp_path, shared_data):
    table = shared_data("nb201_12ep_minibench/mini-bench-arch-cell-accs.csv")
    _run(tiny_search, epochs=2, extra=[f"benchmark_table={table}", "hessian_every=1"])
    epochs = _records(tmp_path / "run", "epoch")
    for record in epochs:
        assert 9.0 < record["benchmark"]["cifar10-test"] < 90.0
        assert record["hessian_eigenvalue"] > 0
    assert json.loads((tmp_path / "run" / "genotype.json").read_text())["arch_str"] == epochs[-1]["genotype"][
        "arch_str"]


def test_benchmark_table_only_for_nb201():
    with pytest.raises(DnasError, match="only applies to --space nb201"):
        resolve_config({"space": "darts"}, ["benchmark_table=x.csv"])


def test_gate_masks_are_computed_once_per_activation(tiny):
    """The extra passes of a curvature estimator reuse the activated weights, so the gate masks (a
    host copy each) are computed once per activation, not once per forward."""
    cfg = resolve_config({"method": "pr-darts", "epochs": 1, "batch_size": 16},
                         [*tiny, "estimator=amended", "estimator.hvp=fd", "schedule.order=arch-first"])
    search = SearchStep(cfg)
    calls = []
    original = search.activation.active_mask
    search.activation.active_mask = lambda weights: calls.append(1) or original(weights)
    forwards = []
    net_forward = search.problem.net.forward
    search.problem.net.forward = lambda *args: forwards.append(1) or net_forward(*args)
    search.arch_step(next(search.train_stream), search.context(Position(0, 0, 0, 1, search.steps_per_epoch)))
    assert len(forwards) >= 5 and len(calls) == 2  # L_val at w, and the leaves of every L_train pass


def test_cells_that_compute_nothing_have_zero_gradient_alignment(tiny_search, tmp_path):
    """When every op of a cell type is masked out (all gates closed, say), its cells compute nothing
    and their weights get no gradient: the logged alignment treats the gradients as zero."""
    search = tiny_search(overrides=["alignment_every=1", "log_every=1"]).open()
    search.algorithm.activation.active_mask = lambda weights: {t: torch.zeros(w.shape, dtype=torch.bool)
                                                     for t, w in weights.items()}
    search.step()
    search.step()
    search.close()
    steps = _records(tmp_path / "run", "step")
    assert steps and all(r["alignment.cell"] == 0.0 for r in steps)


def _as_format_2(state: dict) -> dict:
    """A search checkpoint as dnas wrote it before the shared runner (format 2: its own meter layout)."""
    window, gauges = state["meters"]["window"], state["meters"]["gauges"]
    meters = {"sums": {f"{s}_{k}": window[s][k] for s in ("train", "val") for k in ("loss", "correct")},
              "counts": {s: window[s]["images"] for s in ("train", "val")},
              "batches": {s: window[s]["batches"] for s in ("train", "val")},
              "alignment": {k.removeprefix("alignment."): v for k, v in gauges.items()}}
    return {**state, "format": 2, "meters": meters}


def test_a_search_saved_in_the_previous_checkpoint_format_resumes_to_the_same_result(tiny_search, tmp_path,
                                                                                     interrupt_at):
    extra = ["checkpoint_every=3", "alignment_every=2", "log_every=5"]  # the checkpoint cuts a log window
    reference, g_ref = _run(tiny_search, epochs=2, name="ref", extra=extra)
    interrupt_at(Search, 7)
    with pytest.raises(DnasError, match="interrupted"):
        _run(tiny_search, epochs=2, name="old", extra=extra)
    interrupt_at(Search, None)
    path = tmp_path / "old" / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    assert state["format"] == 3 and state["meters"]["window"]["train"]["batches"] == 2
    torch.save(_as_format_2(state), path)
    resumed, g_res = _run(tiny_search, epochs=2, name="old", extra=extra)
    assert g_res == g_ref and torch.equal(resumed.problem.alphas["cell"], reference.problem.alphas["cell"])
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in read_metrics(tmp_path / "ref")]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in read_metrics(tmp_path / "old")]


def test_a_run_names_the_commit_of_the_code_that_made_it(tmp_path):
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "code.py").write_text("x = 1\n")

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout

    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    commit = git("rev-parse", "HEAD").strip()
    assert source_revision(repo / "pkg") == {"commit": commit, "modified": False}
    (repo / "pkg" / "code.py").write_text("x = 2\n")
    assert source_revision(repo / "pkg") == {"commit": commit, "modified": True}
    assert source_revision(tmp_path) is None  # not a checkout (an installed wheel): nothing to name
