"""Input that is not what it claims to be: files that are not text, not regular or without end, sizes
beyond reason, the user's own files where dnas writes, well-formed but wrong files, misuse of the
Python API. Each ends with one sentence (exit status 2), no traceback, and the user's files as they
were. (``bench/adversarial.py`` runs several hundred such cases through the command line.)"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dnas
from dnas.cli import main
from dnas.config.resolve import resolve_config
from dnas.errors import DnasError
from dnas.runtime import reading
from dnas.runtime.ownership import MANIFEST, OutputFolder, is_marked_png, marked_png
from dnas.runtime.reading import parse_json, parse_yaml, read_json, read_text, read_yaml


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("dnas: error:") and "\n" not in err and "Traceback" not in err, err
    assert len(err) <= 420
    return err


def _fails(argv, capsys) -> str:
    try:
        status = main(argv)
    except SystemExit as stop:  # argparse-level refusals
        status = stop.code
    assert status == 2
    return _one_line(capsys)


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


# ----- the readers -------------------------------------------------------------------------------------------
def test_readers_take_regular_utf8_files_of_bounded_size(tmp_path, monkeypatch):
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    with pytest.raises(DnasError, match=r"is a FIFO \(named pipe\), not a regular file"):
        read_yaml(fifo, "the config file")  # refused at once: opening a FIFO would wait for a writer
    with pytest.raises(DnasError, match="is a folder"):
        read_text(tmp_path, "the genotype file", "genotype")
    with pytest.raises(DnasError, match="is a character device"):
        read_text("/dev/zero", "the config file", "config")
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"space: nb201\nmethod: d\xffarts\n")
    with pytest.raises(DnasError, match=r"not UTF-8 text \(byte 0xff at offset 22\)"):
        read_yaml(bad, "the config file")
    bom = tmp_path / "bom.yaml"
    bom.write_bytes(b"\xef\xbb\xbfepochs: 3\n")
    assert read_yaml(bom, "the config file") == {"epochs": 3}
    monkeypatch.setitem(reading.LIMITS, "config", 100)
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * 200)
    with pytest.raises(DnasError, match="larger than"):
        read_yaml(big, "the config file")


def test_json_and_yaml_are_bounded_in_depth_aliases_and_values(tmp_path, monkeypatch):
    with pytest.raises(DnasError, match="nests more than 64 levels"):
        parse_json("[" * 100_000 + "]" * 100_000, "genotype", "g.json")
    inside = "[" * 100
    assert parse_json(json.dumps({"a": inside}), "x", "p") == {"a": inside}  # brackets inside strings do not count
    with pytest.raises(DnasError, match="not valid JSON \\(line 1, column 9\\)"):
        parse_json('{"a": 1,}', "results", "r.json")
    with pytest.raises(DnasError, match="uses YAML anchors"):
        parse_yaml("a: &x [1, 2]\nb: *x\n", "the config file", "c.yaml")
    with pytest.raises(DnasError, match="uses YAML aliases"):
        parse_yaml("a: *x\n", "the config file", "c.yaml")
    with pytest.raises(DnasError, match="nests more than"):
        parse_yaml("a: " + "[" * 100 + "]" * 100, "the config file", "c.yaml")
    monkeypatch.setattr(reading, "MAX_YAML_VALUES", 50)
    with pytest.raises(DnasError, match="holds more than 50 values"):
        parse_yaml("".join(f"k{i}: {i}\n" for i in range(100)), "the config file", "c.yaml")
    path = tmp_path / "r.json"
    path.write_text('{"genotype": {"space": "nb201"}}')
    assert read_json(path, "results") == {"genotype": {"space": "nb201"}}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300))
def test_any_bytes_read_as_text_json_or_yaml_or_fail_with_one_sentence(tmp_path, data):
    path = tmp_path / "input"
    path.write_bytes(data)
    for reader in (lambda: read_text(path, "the file", "config"), lambda: read_json(path, "the file"),
                   lambda: read_yaml(path, "the file")):
        try:
            reader()
        except DnasError as err:
            assert "\n" not in str(err) and len(str(err)) < 400


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200))
def test_any_text_parses_as_yaml_or_fails_with_one_sentence(text):
    try:
        parse_yaml(text, "the config file", "c.yaml")
    except DnasError as err:
        assert "\n" not in str(err)


KEYS = ["epochs", "batch_size", "w_lr", "a_lr", "channels", "layers", "seed", "image_size", "max_images",
        "log_every", "checkpoint_every", "train_portion", "grad_clip", "w_momentum", "cutout", "space", "method",
        "activation", "estimator.eta", "schedule.f", "progression.keep", "guard"]
VALUES = st.one_of(st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=True, allow_infinity=True),
                   st.booleans(), st.none(), st.text(max_size=30), st.lists(st.integers(), max_size=3))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=4))
def test_any_configuration_resolves_or_fails_with_one_sentence(values):
    """Through the config-file path (typed values) and the command-line path (their text)."""
    for attempt in (lambda: resolve_config(None, None, dict(values)),
                    lambda: resolve_config(None, [f"{k}={v}" for k, v in values.items()])):
        try:
            cfg = attempt()
        except DnasError as err:
            assert "\n" not in str(err) and len(str(err)) < 2000
            continue
        assert 0 <= cfg.seed < 2**32 and cfg.epochs >= 1


# ----- sizes -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv,message", [
    (["channels=100000"], "needs at least"),
    (["image_size=20000"], "needs at least"),
    (["--batch-size", "1000000000"], "needs at least"),
    (["seed=4294967296"], "seed must lie in 0..2**32-1"),
    (["--threads", "100000"], "--threads must be an integer from 1 to 1024"),
    (["log_every=99999999999999999999"], "below 2**63"),
    (["w_lr=nan"], "w_lr takes a number"),
    (["w_lr=1e400"], "takes a finite number"),
])
def test_sizes_beyond_reason_are_refused_before_anything_is_allocated(argv, message, tmp_path, capsys):
    out = tmp_path / "run"
    assert message in _fails(["search", "--epochs", "1", *argv, "--out", str(out)], capsys)
    assert not out.exists()


# ----- ownership ------------------------------------------------------------------------------------------------
def test_a_users_tensorboard_folder_and_lock_link_are_left_alone(tmp_path, capsys, tiny):
    out = tmp_path / "run"
    (out / "tensorboard").mkdir(parents=True)
    (out / "tensorboard" / "mine.txt").write_text("user data")
    assert "already holds other files (tensorboard)" in _fails(["search", *tiny, "--out", str(out)], capsys)
    assert (out / "tensorboard" / "mine.txt").read_text() == "user data"
    precious = tmp_path / "precious.txt"
    precious.write_text("do not touch")
    linked = tmp_path / "linked"
    linked.mkdir()
    os.symlink(precious, linked / ".lock")
    assert "is not a regular file" in _fails(["search", *tiny, "--out", str(linked)], capsys)
    assert precious.read_text() == "do not touch"


def test_output_folders_refuse_names_dnas_did_not_write(tmp_path):
    folder = OutputFolder(tmp_path / "out", "report")
    folder.reserve(["index.html"])
    (tmp_path / "out" / "index.html").write_text("ours")
    folder.reserve(["index.html"])  # written by dnas: may be rewritten
    assert json.loads((tmp_path / "out" / MANIFEST).read_text()) == ["index.html"]
    (tmp_path / "out" / "report.md").write_text("the user's")
    with pytest.raises(DnasError, match="holds 'report.md', which dnas did not write"):
        folder.reserve(["report.md"])
    legacy = OutputFolder(tmp_path / "old", "report", legacy=lambda f: (f / "index.html").read_text() == "dnas")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "index.html").write_text("dnas")
    legacy.reserve(["index.html"])  # a folder of a dnas that kept no list: recognised by its page
    assert marked_png(b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x0dIHDR" + b"x" * 17) != b""
    assert is_marked_png(marked_png(b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x0dIHDR" + b"x" * 17))


def test_report_compare_and_draw_do_not_write_over_the_users_files(tmp_path, capsys, tiny):
    run = tmp_path / "run"
    assert main(["search", *tiny, "--epochs", "1", "--batch-size", "16", "--quiet", "--out", str(run)]) == 0
    capsys.readouterr()
    report = tmp_path / "rep"
    report.mkdir()
    (report / "index.html").write_text("the user's page")
    assert "which dnas did not write" in _fails(["report", str(run), "--out", str(report)], capsys)
    grid = tmp_path / "grid"
    grid.mkdir()
    (grid / "summary.csv").write_text("the user's table")
    assert "which dnas did not write" in _fails(["compare", "--methods", "darts", "--seeds", "0", "--out", str(grid),
                                                 *tiny], capsys)
    (tmp_path / "cell_normal.svg").write_text("<svg>the user's</svg>")
    assert "was not written by dnas" in _fails(["draw", "DARTS_V2", "--out", str(tmp_path / "cell.svg")], capsys)
    before = _digest(tmp_path)
    assert main(["draw", "DARTS_V2", "--out", str(tmp_path / "mine.svg")]) == 0
    assert main(["draw", "DARTS_V2", "--out", str(tmp_path / "mine.svg")]) == 0  # its own drawing: redrawn
    assert all(_digest(tmp_path)[k] == v for k, v in before.items())
    assert (report / "index.html").read_text() == "the user's page"


def test_a_config_edited_after_the_start_is_refused_on_resume(tmp_path, capsys, tiny, interrupt_at):
    from dnas.bilevel.run import Search

    out = tmp_path / "run"
    interrupt_at(Search, 2)
    assert main(["search", *tiny, "--epochs", "2", "--batch-size", "16", "--quiet", "--out", str(out)]) == 2
    interrupt_at(Search, None)
    capsys.readouterr()
    config = out / "config.yaml"
    config.write_text(config.read_text().replace("layers: 1", "layers: 3"))
    message = _fails(["search", *tiny, "--epochs", "2", "--batch-size", "16", "--quiet", "--out", str(out)], capsys)
    assert "config.yaml was changed after the run started (layers)" in message


# ----- well-formed but wrong --------------------------------------------------------------------------------------
@pytest.mark.parametrize("genotype,message", [
    ({"space": "nb201", "cell": [["laser", 0]] * 6}, "unknown op(s) 'laser'"),
    ({"space": "nb201", "cell": [["nor_conv_3x3", 9]] * 6}, "in edge order"),
    ({"space": "moon", "cell": []}, "dnas does not know"),
    ({"space": "darts", "normal": [["skip_connect", 0]] * 8, "reduce": [["skip_connect", 5]] * 8},
     "reads node 5, which does not exist yet"),
    ([1, 2], "does not hold a genotype"),
])
@pytest.mark.parametrize("command", ["train", "query", "draw"])
def test_one_genotype_validator_for_every_command(genotype, message, command, tmp_path, capsys):
    path = tmp_path / "g.json"
    path.write_text(json.dumps(genotype))
    tail = {"train": ["--out", str(tmp_path / "o")], "query": ["--table", str(path)],
            "draw": ["--out", str(tmp_path / "x.svg")]}[command]
    assert message in _fails([command, str(path), *tail], capsys)


def test_a_checkpoint_missing_its_parts_is_refused_in_one_sentence(tmp_path, capsys, tiny, interrupt_at):
    import torch

    from dnas.bilevel.run import Search

    out = tmp_path / "run"
    interrupt_at(Search, 2)
    assert main(["search", *tiny, "--epochs", "2", "--batch-size", "16", "--quiet", "--out", str(out)]) == 2
    interrupt_at(Search, None)
    capsys.readouterr()
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    state.pop("alphas")
    torch.save(state, out / "checkpoint.pt")
    before = _digest(out)
    message = _fails(["search", *tiny, "--epochs", "2", "--batch-size", "16", "--quiet", "--out", str(out)], capsys)
    assert "does not hold a complete search state" in message
    assert _digest(out) == before


# ----- the Python API -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("call", [
    lambda: dnas.search(space=3),
    lambda: dnas.search(overrides=5),
    lambda: dnas.train(42),
    lambda: dnas.query(123, "t.csv"),
    lambda: dnas.compare("nb201", 5),
    lambda: dnas.resolve_config("x"),
    lambda: dnas.resolve_config({}, [1, 2]),
    lambda: dnas.Search({"epochs": 1}, "out"),
    lambda: dnas.SearchStep(None),
    lambda: dnas.Trainer("x", None, "out"),
    lambda: dnas.read_metrics(5),
    lambda: dnas.Genotype.from_dict("|x~0|"),
])
def test_api_misuse_is_a_dnas_error(call):
    with pytest.raises(DnasError):
        call()
