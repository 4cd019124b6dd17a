import subprocess
import sys

import pytest

from dnas.bilevel.methods import METHODS
from dnas.cli import main


def _dnas(*args):
    return subprocess.run([sys.executable, "-m", "dnas", *args], capture_output=True, text=True)


def test_spaces_and_methods_listings(capsys):
    assert main(["spaces"]) == 0
    out = capsys.readouterr().out
    for name in ("darts", "nb201", "s1", "s2", "s3", "s4"):
        assert f"\n{name}" in "\n" + out
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for name in METHODS.names():
        assert name in out
    assert "estimator" in out and "first-order" in out


@pytest.mark.parametrize("args,message", [
    (["search", "--space", "moon"], "unknown search space 'moon'"),
    (["search", "--method", "magic"], "unknown method 'magic'"),
    (["search", "colour=red"], "unknown override key 'colour'"),
    (["search", "--dataset", "/nonexistent/data"], "No dataset named or found at"),
])
def test_user_errors_are_one_line_without_traceback(args, message, tmp_path):
    result = _dnas(*args, "--out", str(tmp_path / "run"))
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_search_command_prints_the_cell(tmp_path, capsys):
    code = main(["search", "--space", "nb201", "--epochs", "1", "--batch-size", "16", "--out", str(tmp_path / "r"),
                 "--quiet", "channels=4", "layers=1", "max_images=96"])
    assert code == 0
    out = capsys.readouterr().out
    assert "nb201 cell: |" in out and "skip connections:" in out
    assert (tmp_path / "r" / "genotype.json").exists()
