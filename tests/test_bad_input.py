"""Every value a user can type: good spellings parse, bad ones stop with one sentence and write nothing."""

from __future__ import annotations

import errno
import zipfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dnas.bilevel.run import Search
from dnas.cli import main
from dnas.config.base import parse_value
from dnas.config.resolve import resolve_config
from dnas.config.train import resolve_train_config
from dnas.errors import DnasError, NonFiniteLossError


@pytest.fixture
def fast(tiny) -> list[str]:
    """Command-line options of a one-epoch tiny search."""
    return ["--epochs", "1", "--batch-size", "16", "--quiet", *tiny]


def _one_sentence(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("dnas: error:") and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("text,value", [
    ("3e-4", 3e-4), ("1E-3", 1e-3), (".5", 0.5), ("1_000", 1000), ("-2", -2), ("+1.5e+2", 150.0), ("7", 7),
    ("true", True), ("null", None), ("none", "none"), ("pr-darts,prox", "pr-darts,prox"),
])
def test_numbers_parse_as_users_write_them(text, value):
    parsed = parse_value(text)
    assert parsed == value and type(parsed) is type(value)


def test_scientific_notation_reaches_every_kind_of_config():
    cfg = resolve_config(None, ["a_lr=3e-4", "w_lr=1E-2", "train_portion=.5", "max_images=1_000",
                                "estimator=amended", "estimator.eta=2e-1", "epochs=1e1"])
    assert (cfg.a_lr, cfg.w_lr, cfg.train_portion, cfg.max_images, cfg.estimator.params["eta"], cfg.epochs) == (
        3e-4, 1e-2, 0.5, 1000, 0.2, 10)
    assert type(cfg.epochs) is int
    train_cfg, _ = resolve_train_config("DARTS_V2", None, ["lr=2.5e-2", "weight_decay=3E-4", "epochs=2"])
    assert (train_cfg.lr, train_cfg.weight_decay) == (0.025, 3e-4)


@pytest.mark.parametrize("item,message", [
    ("epochs=1.5", "epochs takes a whole number, got 1.5"),
    ("batch_size=2.5", "batch_size takes a whole number"),
    ("channels=abc", "channels takes a number, got 'abc'"),
    ("max_images=abc", "max_images takes a number"),
    ("image_size=7.5", "image_size takes a whole number"),
    ("crop_padding=abc", "crop_padding takes a number"),
    ("w_momentum=-1", "w_momentum must lie in [0, 1)"),
    ("a_beta1=2", "a_beta1 and a_beta2 must lie in [0, 1)"),
    ("flip=abc", "flip takes true or false, got 'abc'"),
    ("a_lr=.inf", "a_lr takes a finite number"),
    ("a_lr=nan", "a_lr takes a"),
    ("seed=-1", "seed must lie in 0..2**32-1"),
    ("log=wandb", "log must be one of jsonl, tensorboard"),
    ("estimator=amended", None),  # good: a control for the parametrisation below
])
def test_bad_values_stop_with_one_sentence_and_write_nothing(item, message, tmp_path, capsys, fast):
    out = tmp_path / "run"
    if message is None:
        assert main(["search", *fast, item, "--out", str(out)]) == 0
        return
    assert main(["search", *fast, item, "--out", str(out)]) == 2
    assert message in _one_sentence(capsys)
    assert not out.exists()
    assert main(["train", "DARTS_V2", "--dataset", "digits", "--out", str(out), item.replace("w_momentum", "momentum")
                 .replace("a_lr", "lr")]) == 2 or item.startswith(("a_beta1", "estimator", "log", "seed"))
    assert not out.exists()


def test_bad_component_parameter_types(capsys, fast):
    assert main(["search", *fast, "schedule=every-k", "schedule.k=2.5"]) == 2
    assert "schedule 'every-k' parameter k takes a whole number" in _one_sentence(capsys)
    assert main(["search", *fast, "arch_regularizers=prox", "arch_regularizers.prox.squared=maybe"]) == 2
    assert "takes true or false" in _one_sentence(capsys)


def test_a_users_own_files_are_never_taken_over(tmp_path, capsys, fast):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "metrics.jsonl").write_text("my metrics\n")
    (out / "results.json").write_text("{\"mine\": 1}\n")
    assert main(["search", *fast, "--out", str(out)]) == 2
    assert "is not a dnas search run" in _one_sentence(capsys)
    assert (out / "metrics.jsonl").read_text() == "my metrics\n" and (out / "results.json").read_text() == \
        "{\"mine\": 1}\n"
    assert sorted(p.name for p in out.iterdir()) == ["metrics.jsonl", "results.json"]


def test_a_failed_first_start_leaves_no_folder(tmp_path, capsys, fast):
    out = tmp_path / "new" / "run"
    assert main(["search", *fast, "--dataset", str(tmp_path / "missing.zip"), "--out", str(out)]) == 2
    _one_sentence(capsys)
    assert not out.exists()
    given = tmp_path / "empty"
    given.mkdir()
    assert main(["search", *fast, "--dataset", str(tmp_path / "missing.zip"), "--out", str(given)]) == 2
    assert given.is_dir() and not list(given.iterdir())  # the user's empty folder stays, empty


def _poison_losses_after(monkeypatch, steps: int) -> None:
    """Every loss of the search becomes NaN once it has taken ``steps`` steps."""
    real_loss, real_step = F.cross_entropy, Search.step
    poisoned = []

    def step(self):
        if self.global_step >= steps:
            poisoned.append(True)
        return real_step(self)

    monkeypatch.setattr(Search, "step", step)
    monkeypatch.setattr(F, "cross_entropy", lambda *a, **k: real_loss(*a, **k) * (float("nan") if poisoned else 1.0))


def test_non_finite_loss_before_the_first_checkpoint_keeps_nothing_and_the_fix_runs(tiny_search, tmp_path,
                                                                                      monkeypatch):
    out = tmp_path / "run"
    _poison_losses_after(monkeypatch, 0)
    with pytest.raises(NonFiniteLossError, match="no checkpoint had been written, so .* was left as it was"):
        tiny_search(overrides=["checkpoint_every=2"]).run()
    assert not out.exists()
    monkeypatch.undo()
    tiny_search(overrides=["a_lr=1e-4"]).run()
    assert (out / "results.json").exists()


def test_the_non_finite_message_says_when_a_checkpoint_was_kept(tiny_search, tmp_path, monkeypatch):
    _poison_losses_after(monkeypatch, 3)
    message = (r"the train loss became non-finite in epoch 0 \(step 4\); lower w_lr or a_lr or check the data; "
               "the last good checkpoint .* was kept")
    with pytest.raises(NonFiniteLossError, match=message):
        tiny_search(overrides=["checkpoint_every=2", "log_every=4"]).run()
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["global_step"] == 2


def test_out_under_a_file_and_os_errors_are_one_sentence(tmp_path, monkeypatch, capsys, fast):
    (tmp_path / "afile").write_text("x")
    assert main(["search", *fast, "--out", str(tmp_path / "afile" / "run")]) == 2
    assert "is a file, not a directory" in _one_sentence(capsys)

    def denied(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", denied)
    assert main(["search", *fast, "--out", str(tmp_path / "ro" / "run")]) == 2
    assert "cannot create the run directory" in _one_sentence(capsys)


def test_a_full_disk_is_one_sentence_and_keeps_the_last_checkpoint(tmp_path, monkeypatch, capsys, fast):
    out = tmp_path / "run"
    assert main(["search", *fast, "--out", str(out)]) == 0
    capsys.readouterr()
    before = (out / "checkpoint.pt").read_bytes()
    import torch

    def full(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:858] . PytorchStreamWriter failed writing file")

    monkeypatch.setattr(torch, "save", full)
    assert main(["search", *fast, "--epochs", "2", "--out", str(tmp_path / "run2")]) == 2
    err = _one_sentence(capsys)
    assert "could not write" in err and "checkpoint.pt" in err and "inline_container" not in err
    assert not (tmp_path / "run2").exists()  # it failed before any checkpoint: nothing is left
    assert (out / "checkpoint.pt").read_bytes() == before

    def enospc(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", enospc)
    from dnas.runtime.atomic import atomic_torch_save

    with pytest.raises(Exception, match="no space left on the device"):
        atomic_torch_save({}, out / "checkpoint.pt")
    assert (out / "checkpoint.pt").read_bytes() == before
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_a_zip_without_class_folders_is_one_sentence(tmp_path, capsys, fast):
    from PIL import Image

    archive = tmp_path / "flat.zip"
    image = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(image)
    with zipfile.ZipFile(archive, "w") as z:
        z.write(image, "a.png")
        z.write(image, "b.png")
    assert main(["search", *fast, "--dataset", str(archive), "--out", str(tmp_path / "run")]) == 2
    assert "are not in class folders" in _one_sentence(capsys)


def test_an_unresolved_config_without_discretizer_is_named_and_leaves_nothing(tmp_path, tiny):
    cfg = resolve_config({"epochs": 1, "batch_size": 16}, tiny)
    cfg.discretizer = None  # as in a hand-built SearchConfig(): resolve_config picks the space's rule
    with pytest.raises(DnasError, match="resolve_config"):
        Search(cfg, tmp_path / "run", progress=False).open()
    assert not (tmp_path / "run").exists()
