"""dnas.runtime.allocator: freed host memory is kept for reuse, and a user's own malloc setting stands."""

import json
import os
import subprocess
import sys

import pytest

from dnas.runtime import allocator

# above glibc's largest dynamic mmap threshold (32 MiB): its default maps and unmaps every one of them
SIZES = (9 * 2**20, 10 * 2**20, 12 * 2**20, 16 * 2**20)  # float32 elements
# one process per case: the policy is process-wide and the test process must keep its own
PROBE = f"SIZES = {SIZES}\n" + """
import json, resource, sys, torch
from dnas.runtime.allocator import allocator_state, retain_freed_memory

def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(4):  # an iteration's worth of large activations, allocated and freed, four times
        tensors = [torch.ones(s) for s in SIZES]
        del tensors
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

result = {"before": allocator_state()}
if sys.argv[1] == "retain":
    result["state"] = retain_freed_memory()
    result["again"] = retain_freed_memory()
faults()  # the first rounds grow the heap to what the pattern needs
result["faults"] = faults()
print(json.dumps(result))
"""


def _probe(mode: str, env: dict[str, str] | None = None) -> dict:
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith("MALLOC_") and k not in ("GLIBC_TUNABLES", "LD_PRELOAD")}
    environ.update(env or {})
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, env=environ,
                         check=True)
    return json.loads(out.stdout)


glibc = pytest.mark.skipif(allocator._mallopt() is None or not sys.platform.startswith("linux"),
                           reason="the C library has no mallopt (not glibc)")


@glibc
def test_retained_memory_is_reused_without_page_faults():
    default, retained = _probe("keep"), _probe("retain")
    assert default["before"] == "default" and retained["state"] == retained["again"] == "retained"
    pages = 4 * sum(SIZES) * 4 // 4096  # what the four rounds touch
    assert default["faults"] > pages // 2, (default, pages)  # glibc's default: fresh pages every round
    # retained: the rounds reuse the heap (glibc may still grow it by a tensor now and then: alignment
    # padding makes a request a few bytes larger than the chunk just freed)
    assert retained["faults"] < pages // 4, (retained, pages)


@glibc
def test_a_users_malloc_environment_is_left_alone():
    for env in ({"MALLOC_ARENA_MAX": "2"}, {"MALLOC_TRIM_THRESHOLD_": "0"}, {"MALLOC_CONF": "narenas:1"}):
        assert _probe("retain", env)["state"] == "user", env
    tunables = _probe("retain", {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    assert tunables["state"] == "user"


def test_without_mallopt_nothing_changes(monkeypatch):
    monkeypatch.setattr(allocator, "_state", None)
    monkeypatch.setattr(allocator, "_mallopt", lambda: None)
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    for key in [k for k in os.environ if k.startswith("MALLOC_")]:
        monkeypatch.delenv(key)
    assert allocator.retain_freed_memory() == "unavailable" and allocator.allocator_state() == "unavailable"


@glibc
def test_env_json_records_the_policy_the_run_applied(tmp_path, tiny):
    """A search in a fresh process retains freed memory and says so in env.json; under a user's own
    malloc setting it leaves malloc alone and says that."""
    for env, state in (({}, "retained"), ({"MALLOC_ARENA_MAX": "2"}, "user")):
        environ = {k: v for k, v in os.environ.items()
                   if not k.startswith("MALLOC_") and k not in ("GLIBC_TUNABLES", "LD_PRELOAD")}
        out = tmp_path / state
        subprocess.run([sys.executable, "-m", "dnas", "search", "--quiet", "--epochs", "1", "--batch-size", "16",
                        "--out", str(out), *tiny], env={**environ, **env}, check=True, capture_output=True)
        assert json.loads((out / "env.json").read_text())["host_allocator"] == state
