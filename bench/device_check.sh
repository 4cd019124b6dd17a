#!/usr/bin/env bash
# The accelerator check, in one command, for whoever has one: the device test subset and the search
# benchmark on that device, gathered in one JSON file.
#
#     bench/device_check.sh [OUT.json]       # default device_check.json; DEVICE=cuda (default) or cpu
#
# Parts: `DNAS_TEST_DEVICE=$DEVICE python -m pytest -m device` (every preset's search step under CUDA's
# sync debug mode, bf16/fp16, resume, `dnas train`, the command line, 2 ranks over NCCL when two devices
# exist), then `bench/bench_search.py --device $DEVICE` on the paper-sized spaces (time per iteration and
# peak memory for every preset). The JSON holds the device, versions, every test's outcome (failures with
# their message) and every benchmark row; the script exits non-zero when a test failed.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="$(realpath -m "${1:-device_check.json}")"
device="${DEVICE:-cuda}"
python="${PYTHON:-python}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$here/.."
echo "device_check: tests on $device" >&2
DNAS_TEST_DEVICE="$device" "$python" -m pytest -m device tests/test_device.py -p no:cacheprovider \
    --junitxml "$work/tests.xml" -q
tests_rc=$?
echo "device_check: bench_search on $device" >&2
"$python" bench/bench_search.py --device "$device" --threads "${THREADS:-4}" --methods "${METHODS:-all}" \
    ${QUICK:+--quick} --json "$work/bench.json" >&2
bench_rc=$?
"$python" - "$work" "$out" "$device" "$tests_rc" "$bench_rc" <<'PY'
import datetime, json, platform, sys, xml.etree.ElementTree as ET
from pathlib import Path
import torch
import dnas

work, out, device, tests_rc, bench_rc = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], *map(int, sys.argv[4:])
tests = []
if (work / "tests.xml").is_file():
    for case in ET.parse(work / "tests.xml").iter("testcase"):
        outcome, message = "passed", None
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome, message = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag], node.get("message")
        tests.append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome,
                      "seconds": float(case.get("time") or 0), "message": message})
cuda = device.startswith("cuda") and torch.cuda.is_available()
report = {
    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "device": torch.cuda.get_device_name() if cuda else platform.processor() or platform.machine(),
    "device_count": torch.cuda.device_count() if cuda else 0,
    "torch": torch.__version__, "cuda": torch.version.cuda, "dnas": dnas.__version__, "python": platform.python_version(),
    "tests": {"exit_code": tests_rc, "counts": {k: sum(t["outcome"] == k for t in tests)
                                                for k in ("passed", "failed", "error", "skipped")}, "cases": tests},
    "bench_search": {"exit_code": bench_rc,
                     **(json.loads((work / "bench.json").read_text()) if (work / "bench.json").is_file() else {})},
}
out.write_text(json.dumps(report, indent=2) + "\n")
print(f"device_check: {report['tests']['counts']} -> {out}")
PY
exit $(( tests_rc != 0 || bench_rc != 0 ))
