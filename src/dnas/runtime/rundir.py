"""Run directories: ownership, checkpoints and the resume check, shared by every kind of run.

A run directory is owned by one process at a time and every write into it is atomic, so a run
killed at any instant is resumed by the same command to the bit-identical result:

- **Ownership.** :meth:`RunDir.open` takes an exclusive ``flock`` on ``RUN/.lock`` (the kernel
  releases it when the holder dies, so a stale lock never blocks a rerun); a second process stops
  with one sentence naming the holder's pid.
- **What is ours.** A directory is taken only when it is new, empty, or holds nothing but this
  kind of run's own files (``config.yaml`` first among them) and our temporaries. A user's own
  files are never overwritten, not even ones that happen to share our names: without our
  ``config.yaml`` the directory is refused.
- **Atomic writes.** Every file is written to a temporary beside it and renamed over it
  (:mod:`dnas.runtime.atomic`); temporaries left by a kill are removed at the next start.
- **Resume.** ``checkpoint.pt`` holds the full state, tagged with its format, its kind (search or
  train), the resolved configuration and the torch thread count. A run with a checkpoint resumes
  only with the same configuration (:func:`config_differences`, keys in ``resume_free`` aside) and
  the same thread count (floating-point sums are split across threads differently, so the same
  seed gives other numbers under another count). A directory whose first start died before its
  first checkpoint holds no progress: it is started over.
- **A failed first start leaves nothing behind**: :meth:`RunDir.abandon` removes what the start
  wrote (the folder too, when it made it).
- **Metrics** go to ``metrics.jsonl`` (always; truncated to the checkpoint's offset on resume) and,
  with ``log=tensorboard``, to TensorBoard event files in ``RUN/tensorboard``
  (:mod:`dnas.runtime.metrics`).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from dnas.errors import DnasError
from dnas.runtime.atomic import atomic_torch_save, atomic_write_text, is_temporary
from dnas.runtime.distributed import SINGLE, Group
from dnas.runtime.environment import environment
from dnas.runtime.files import CHECKPOINT, CONFIG, ENV, LOCK, METRICS, TENSORBOARD
from dnas.runtime.metrics import MetricsLog, NullLog
from dnas.runtime.reading import read_json, read_yaml, shorten

#: version of the checkpoint layout (3: the meters of the shared runner; 2 is read and converted)
CHECKPOINT_FORMAT = 3
READABLE_FORMATS = (2, 3)


# ----- configuration ------------------------------------------------------------------------------------
def config_differences(saved: Mapping[str, Any], current: Mapping[str, Any], free: Iterable[str] = (),
                       defaults: Mapping[str, Any] | None = None) -> list[str]:
    """The keys whose values differ between two configurations (``free`` keys aside). A key one side
    lacks holds its value in ``defaults``: a key the saved configuration lacks was written by a dnas
    that did not have it yet, a key only the saved one has was removed since (at its neutral value
    it means what the current configuration does without it)."""
    free, defaults = set(free), defaults or {}
    return sorted(k for k in set(saved) | set(current)
                  if k not in free and saved.get(k, defaults.get(k)) != current.get(k, defaults.get(k)))


# ----- the run directory ----------------------------------------------------------------------------------
class RunDir:
    """The directory of one run of ``kind`` (``search`` or ``train``).

    ``own_files``: every file such a run writes (besides the lock, ``tensorboard/`` and
    temporaries); ``results``: the files of a finished run (their presence without a checkpoint
    means the checkpoint was removed, and the directory is refused rather than started over).
    """

    def __init__(self, path: str | Path, kind: str, own_files: Iterable[str], results: Iterable[str],
                 resume_free: Iterable[str] = (), defaults: Mapping[str, Any] | None = None,
                 comparable: Callable[[dict[str, Any]], dict[str, Any]] = dict, group: Group = SINGLE):
        self.path = Path(path)
        self.group = group  # in a data-parallel run only rank 0 writes; every rank reads the checkpoint
        self.kind = kind
        self.noun = {"search": "search run", "train": "training run"}.get(kind, f"{kind} run")
        self.own_files = {CONFIG, ENV, METRICS, CHECKPOINT, *own_files}
        self.results = set(results)
        self.resume_free = set(resume_free)
        self.defaults = dict(defaults or {})  # the configuration's defaults (see config_differences)
        self.comparable = comparable  # a saved configuration as this dnas writes it (Config.comparable)
        self.created = False
        self._made_tensorboard = False  # this start made RUN/tensorboard (a failed start removes it)
        self._lock_fd: int | None = None
        self._metrics: MetricsLog | None = None

    # ----- ownership -------------------------------------------------------------------------------
    def _listing(self) -> list[str]:
        try:
            return sorted(p.name for p in self.path.iterdir())
        except OSError as err:
            raise DnasError(f"cannot read --out {self.path} ({err.strerror}); check its permissions") from None

    def check(self) -> None:
        """Refuse (one sentence, nothing written) a path that is not, or cannot become, a run of ours."""
        path = self.path
        for parent in [path, *path.parents]:
            if parent.exists() and not parent.is_dir():
                raise DnasError(f"--out {path}: {parent} is a file, not a directory; give a directory")
            if parent.exists():
                break
        if not path.is_dir():
            return
        listing = self._listing()
        lock = path / LOCK
        if lock.is_symlink() or (lock.exists() and not lock.is_file()):
            raise DnasError(f"{lock} is not a regular file (a link or a folder); dnas will not write through it: "
                            "remove it or choose another --out")
        # tensorboard/ is ours only beside our config.yaml: without it, a folder of that name is the user's
        ours = (LOCK, TENSORBOARD) if CONFIG in listing else (LOCK,)
        names = [n for n in listing if n not in ours and not is_temporary(n, self.own_files)]
        foreign = [n for n in names if n not in self.own_files]
        if foreign:
            raise DnasError(f"--out {path} already holds other files ({', '.join(foreign[:3])}); choose an empty "
                            "or new directory")
        if names and CONFIG not in names:
            raise DnasError(f"--out {path} holds {', '.join(names[:3])} but no {CONFIG}, so it is not a dnas "
                            f"{self.noun}; choose an empty or new directory")
        if CHECKPOINT not in names and self.results & set(names):
            raise DnasError(f"--out {path} holds the results of a finished {self.noun} but no {CHECKPOINT}; "
                            "choose another --out")

    def open(self) -> None:
        """Check, create and lock the directory, and remove temporaries that a kill left behind (rank 0;
        the other ranks of a data-parallel run wait for it and stop with its error if it fails)."""
        error = None
        if self.group.main:
            try:
                self._open()
            except DnasError as err:
                error = str(err)
        error = self.group.broadcast(error)
        if error is not None:
            raise DnasError(error)

    def _open(self) -> None:
        self.check()
        try:
            if not self.path.is_dir():
                self.path.mkdir(parents=True)
                self.created = True
            # O_NOFOLLOW: a .lock made a link after the check is not followed (ELOOP)
            fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise OSError(errno.EINVAL, "its .lock is not a regular file")
        except OSError as err:
            raise DnasError(f"cannot create the run directory {self.path} ({err.strerror}); check the path and "
                            "its permissions") from None
        if not _try_lock(fd):
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DnasError(f"{self.path} is in use by another dnas process (pid {holder}); wait for it to end or "
                            "stop it, or choose another --out")
        self._lock_fd = fd
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.check()  # again, now that no other process can change the directory
        for name in self._listing():
            if is_temporary(name, self.own_files):
                (self.path / name).unlink(missing_ok=True)

    def close(self) -> None:
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock; the file stays (unlinking it would race)
            self._lock_fd = None

    def abandon(self) -> None:
        """A first start failed before its first checkpoint: remove what it wrote (and the folder if
        it made it), so that the corrected command starts cleanly. Directories with a checkpoint are
        kept as they are."""
        if self._lock_fd is None or self.has_checkpoint or not self.group.main:
            self.close()
            return
        self.close()
        if self.created:
            shutil.rmtree(self.path, ignore_errors=True)
            return
        for name in (*self.own_files, LOCK):
            (self.path / name).unlink(missing_ok=True)
        if self._made_tensorboard:
            shutil.rmtree(self.path / TENSORBOARD, ignore_errors=True)

    # ----- files ---------------------------------------------------------------------------------------
    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def has_checkpoint(self) -> bool:
        return (self.path / CHECKPOINT).is_file()

    def write_text(self, name: str, text: str) -> None:
        if self.group.main:
            atomic_write_text(self.path / name, text)

    def read_json(self, name: str) -> Any:
        return read_json(self.path / name, f"the run's {name}")

    def write_json(self, name: str, data: Any) -> None:
        self.write_text(name, json.dumps(data, indent=2) + "\n")

    def start(self, config_yaml: str, extra: Mapping[str, Any] | None = None) -> None:
        """A fresh start: ``config.yaml`` (written first: it marks the directory as ours) and ``env.json``
        (with ``extra``: what the algorithm records of its run, e.g. how its data is read)."""
        self.write_text(CONFIG, config_yaml)
        self.write_json(ENV, {**environment(), **(extra or {})})

    # ----- checkpoints ---------------------------------------------------------------------------------
    def save_checkpoint(self, state: dict[str, Any]) -> None:
        if not self.group.main:
            return
        tagged = {"format": CHECKPOINT_FORMAT, "kind": self.kind, "threads": torch.get_num_threads(),
                  "world": self.group.world, **state}
        if self._metrics is not None:
            tagged["metrics_offset"] = self._metrics.offset
        atomic_torch_save(tagged, self.path / CHECKPOINT)

    def load_checkpoint(self, config: Mapping[str, Any], device: torch.device,
                        differences: Callable[[dict[str, Any]], list[str]] | None = None) -> dict[str, Any] | None:
        """The checkpoint's state, or None for a fresh start; refuses an unreadable checkpoint, one of
        another kind, configuration or thread count (one sentence each). ``differences(state)``
        names further differences (e.g. the trained cell)."""
        path = self.path / CHECKPOINT
        if not path.is_file():
            return None
        try:
            state = torch.load(path, map_location=device, weights_only=True)
            if not isinstance(state, dict) or state.get("format") not in READABLE_FORMATS:
                raise ValueError("not a dnas checkpoint of this version")
        except Exception as err:  # noqa: BLE001 - any unreadable file is reported the same way
            raise DnasError(f"checkpoint {path} is unreadable or corrupt ({type(err).__name__}); delete it to start "
                            "the run from scratch, or choose another --out") from None
        if state.get("kind") != self.kind:
            raise DnasError(f"{self.path} holds a run of another kind ({shorten(state.get('kind'), 20)}), not a "
                            f"{self.noun}; choose another --out")
        if not isinstance(state.get("config"), dict):
            raise DnasError(f"checkpoint {path} holds no configuration; delete it to start the run from scratch, or "
                            "choose another --out")
        self._check_config_file(state["config"])
        differ = config_differences(self.comparable(state["config"]), config, self.resume_free, self.defaults)
        differ += differences(state) if differences is not None else []
        if differ:
            raise DnasError(f"{self.path} holds a {self.noun} with a different configuration ({', '.join(differ)}); "
                            "run with the same settings to resume it, or choose another --out")
        if state["world"] != self.group.world:
            raise DnasError(f"{self.path} was run by {state['world']} process(es) and this run has {self.group.world};"
                            f" resume it with {state['world']} (torchrun --nproc_per_node) so that it ends the same")
        threads = torch.get_num_threads()
        if state["threads"] != threads:
            raise DnasError(f"{self.path} was run with {state['threads']} torch threads and this process has {threads};"
                            f" resume with --threads {state['threads']} (results depend on the thread count)")
        return state

    def _check_config_file(self, saved: Mapping[str, Any]) -> None:
        """Refuse a ``config.yaml`` that no longer describes the run (edited by hand since it started)."""
        path = self.path / CONFIG
        try:
            on_disk = read_yaml(path, "the run's configuration")
            if not isinstance(on_disk, dict):
                raise DnasError(f"{path} does not hold a configuration")
        except DnasError as err:
            raise DnasError(f"{err}; it must describe the run: restore it or choose another --out") from None
        changed = config_differences(saved, on_disk, (), self.defaults)
        if changed:
            raise DnasError(f"{path} was changed after the run started ({', '.join(changed[:5])}); restore it (the "
                            "checkpoint holds the run's configuration) or choose another --out")

    # ----- metrics -------------------------------------------------------------------------------------
    def metrics(self, resume_offset: int | None, sinks: str = "jsonl", purge_step: int = 0) -> MetricsLog:
        if not self.group.main:
            return NullLog()
        if sinks == "tensorboard" and not (self.path / TENSORBOARD).exists():
            self._made_tensorboard = True
        self._metrics = MetricsLog(self.path / METRICS, resume_offset,
                                   tensorboard=self.path / TENSORBOARD if sinks == "tensorboard" else None,
                                   purge_step=purge_step)
        return self._metrics


def _try_lock(fd: int) -> bool:
    """An exclusive lock on ``fd`` without waiting (``flock`` on POSIX, ``msvcrt.locking`` on Windows)."""
    if sys.platform == "win32":
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


