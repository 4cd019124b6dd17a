"""Bit-level fingerprints of a short search with every preset, to show that a change kept the math.

    python bench/invariants.py --out before.json      # on the code before a change
    python bench/invariants.py --out after.json       # after it
    python bench/invariants.py --compare before.json after.json

Each preset searches NB201, S2 and the DARTS space on the embedded digits for two epochs at a tiny size (one torch
thread, seed 0) through the public API; the fingerprint is the derived genotype, the final
architecture parameters (every float, as hex) and a SHA-256 of the final checkpoint's weights. Two
fingerprints are equal only if every bit of the search is.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import torch

SETTINGS = {"dataset": "digits", "epochs": 2, "batch_size": 16, "seed": 0}
PRESETS = ["amended-darts", "darts", "darts-2nd", "darts-prime", "darts-prime-v1", "lambda-darts", "pr-darts",
           "pr-darts-code"]
OVERRIDES = {"nb201": ["channels=4", "layers=1", "max_images=192", "log_every=2"],
             "s2": ["channels=4", "layers=5", "max_images=192", "log_every=2"],
             "darts": ["channels=4", "layers=5", "max_images=192", "log_every=2", "image_size=8"]}


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def fingerprint(space: str, method: str) -> dict[str, object]:
    import dnas

    with tempfile.TemporaryDirectory() as tmp:
        found = dnas.search(space, method, out=Path(tmp) / "run", threads=1,
                            overrides=OVERRIDES[space], **SETTINGS)
        state = torch.load(found.run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)
    return {
        "genotype": found.genotype.to_dict(),
        "alphas": {t: [float(v).hex() for v in a.flatten().tolist()] for t, a in state["alphas"].items()},
        "weights_sha256": tensor_digest(state["net"]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="write the fingerprints here (JSON)")
    parser.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"))
    parser.add_argument("--methods", help="comma-separated presets (default: every preset)")
    parser.add_argument("--spaces", default="nb201,s2,darts")
    args = parser.parse_args()
    if args.compare:
        before, after = (json.loads(Path(p).read_text()) for p in args.compare)
        differ = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        for key in sorted(set(before) | set(after)):
            print(f"{key:32s} {'differs' if key in differ else 'identical'}")
        print(f"{len(before) - len(differ)} of {len(before)} identical")
        return 1 if differ else 0
    methods = args.methods.split(",") if args.methods else PRESETS
    result = {}
    for space in args.spaces.split(","):
        for method in methods:
            result[f"{space}/{method}"] = fingerprint(space, method)
            print(f"{space}/{method}: {result[f'{space}/{method}']['weights_sha256'][:16]}", file=sys.stderr)
    text = json.dumps(result, indent=1, sort_keys=True)
    if args.out:
        Path(args.out).write_text(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
