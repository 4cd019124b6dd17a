"""Every code block of README.md and docs/**/*.md runs here, at a tiny size, or is marked as not run.

The mark is an HTML comment on the line right before the fence, with the reason::

    <!-- not run: needs CIFAR-10 and hours of CPU -->

Unmarked ``python`` blocks run with ``exec`` in a fresh temporary directory; unmarked ``bash``
blocks run line by line there, every line a ``dnas`` command run in this process (exit status 0
expected). ``console`` blocks (recorded output) must be marked; ``text``, ``yaml``, ``json`` and ``toml``
blocks (diagrams, formulas, files) are never run. Also: the site builds with ``mkdocs build --strict``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNNABLE = {"python", "bash"}
NEVER_RUN = {"text", "yaml", "json", "toml"}
MUST_BE_MARKED = {"console"}
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,})(?P<lang>[^`\s]*)\s*$")
MARK = re.compile(r"^\s*<!--\s*not run:(?P<reason>.*?)-->\s*$")


@dataclass
class Block:
    file: str
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    not_run: str | None  # the reason, when marked

    @property
    def id(self) -> str:
        return f"{self.file}:{self.line}"


def blocks_of(text: str, file: str) -> list[Block]:
    """The fenced blocks of a Markdown text, with the not-run mark of each."""
    lines = text.splitlines()
    found, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence = match["indent"], match["fence"]
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == fence), None)
        if end is None:
            raise AssertionError(f"{file}:{i + 1}: a code fence that is never closed")
        mark = MARK.match(lines[i - 1]) if i > 0 else None
        code = "\n".join(line.removeprefix(indent) for line in lines[i + 1:end])
        found.append(Block(file, i + 1, match["lang"].lower(), code, mark["reason"].strip() if mark else None))
        i = end + 1
    return found


def shell_commands(code: str) -> list[str]:
    """The commands of a shell block: continuations joined, comments and blank lines dropped."""
    commands, pending = [], ""
    for raw in code.splitlines():
        pending += raw
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        words = shlex.split(pending, comments=True)
        if words:
            commands.append(shlex.join(words))
        pending = ""
    return commands


def problems(block: Block) -> list[str]:
    """Why a block can be neither run nor skipped, if it cannot."""
    if not block.lang:
        return ["a fence without a language (python, bash, console, text, yaml, json or toml)"]
    if block.lang not in RUNNABLE | NEVER_RUN | MUST_BE_MARKED:
        return [f"language {block.lang!r} is none of python, bash, console, text, yaml, json, toml"]
    if block.not_run is not None:
        return [] if block.not_run else ["a not-run mark without its reason"]
    if block.lang in MUST_BE_MARKED:
        return ["a console block (recorded output) must be marked <!-- not run: reason -->"]
    if block.lang == "bash":
        return [f"{command!r} is not a dnas command: run it tiny as one, or mark the block not run"
                for command in shell_commands(block.code) if shlex.split(command)[0] != "dnas"]
    return []


def doc_files() -> list[Path]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    return [f for f in files if "compare" not in f.relative_to(ROOT).parts[:2]]  # dnas compare's own reports


ALL = [b for f in doc_files() for b in blocks_of(f.read_text(encoding="utf-8"), str(f.relative_to(ROOT)))]
TO_RUN = [b for b in ALL if b.lang in RUNNABLE and b.not_run is None and not problems(b)]


def test_the_docs_have_blocks_to_run():
    assert len(ALL) > 40 and len(TO_RUN) >= 5


@pytest.mark.parametrize("block", ALL, ids=[b.id for b in ALL])
def test_every_block_runs_or_says_why_not(block):
    assert not problems(block), f"{block.id}: " + "; ".join(problems(block))


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    import torch

    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: one thread is the fastest on a shared machine
    yield tmp_path
    torch.set_num_threads(threads)


@pytest.mark.parametrize("block", TO_RUN, ids=[b.id for b in TO_RUN])
def test_block(block, in_tmp, capsys):
    if block.lang == "python":
        exec(compile(block.code, block.id, "exec"), {"__name__": "__main__"})
        return
    from dnas.cli import main

    for command in shell_commands(block.code):
        status = main(shlex.split(command)[1:])
        assert status == 0, f"{block.id}: `{command}` exited with {status}:\n{capsys.readouterr().err}"


def test_the_mark_and_the_checks():
    text = ("<!-- not run: needs a GPU -->\n```bash\ndnas search --device cuda\n```\n\n"
            "```console\n$ dnas spaces\n```\n```\nplain\n```\n"
            "```bash\ndnas spaces   # comment\ndnas methods \\\n    --show darts\npip install x\n```\n"
            "<!-- not run: -->\n```python\nprint(1)\n```\n")
    first, console, plain, shell, empty = blocks_of(text, "x.md")
    assert first.not_run == "needs a GPU" and not problems(first)
    assert "console block" in problems(console)[0] and "without a language" in problems(plain)[0]
    assert shell_commands(shell.code) == ["dnas spaces", "dnas methods --show darts", "pip install x"]
    assert problems(shell) == ["'pip install x' is not a dnas command: run it tiny as one, or mark the block not run"]
    assert problems(empty) == ["a not-run mark without its reason"]


def test_no_history_and_no_paths_outside_the_repository():
    for file in doc_files():
        text = file.read_text(encoding="utf-8")
        assert not re.search(r"\bissue \d+", text, re.IGNORECASE), f"{file}: an issue number"
        assert "../shared" not in text and "/work/" not in text, f"{file}: a path outside the repository"


def test_the_readme_stays_short_and_keeps_its_two_setup_lines():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200
    assert ("pip install torch==2.13.0 && pip install -e . && dnas search" in readme
            and 'pip install torch==2.13.0 && pip install -e ".[dev]" && python -m pytest' in readme)


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings") is None,
                    reason='mkdocs and mkdocstrings are not installed (pip install -e ".[docs]")')
def test_the_site_builds_strictly(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    site = tmp_path / "site"
    assert (site / "index.html").is_file() and (site / "api" / "dnas" / "index.html").is_file()


def test_sphinx_roles_of_docstrings_render_as_code():
    spec = importlib.util.spec_from_file_location("docs_hooks", Path(__file__).parents[1] / "docs_hooks.py")
    docs_hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(docs_hooks)
    html = ":class:<code>~dnas.data.ImageDataset</code> and :func:<code>dnas.search</code>"
    assert docs_hooks.on_page_content(html) == "<code>ImageDataset</code> and <code>dnas.search</code>"
