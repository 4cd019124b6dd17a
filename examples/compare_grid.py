"""A method × seed grid with `dnas.compare`, and where its report is.

Two methods × two seeds on NAS-Bench-201 at a tiny size; every run is its own resumable run
directory, and the grid writes `report.md`, CSVs (`summary.csv`, `per_run.csv`, `curves.csv`) and
HTML pages. Running the script again with the same `--out` reuses the finished runs. With a
NAS-Bench-201 table (`--table`) the report also scores every cell.

    python examples/compare_grid.py [--out DIR] [--table TABLE]
"""

import argparse
import tempfile
from pathlib import Path

import dnas

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", default=None, help="the grid's folder (default: a temporary one)")
parser.add_argument("--table", default=None, help="a NAS-Bench-201 table to score the cells")
args = parser.parse_args()
out = Path(args.out or tempfile.mkdtemp(prefix="dnas-compare-"))

if __name__ == "__main__":  # jobs > 1 would start worker processes, which need this guard
    dnas.compare("nb201", ["darts", "pr-darts"], seeds=[0, 1], out=out, table=args.table,
                 dataset="digits", epochs=1, batch_size=16,
                 overrides={"channels": 4, "layers": 1, "max_images": 64})
    for name in ("report.md", "summary.csv", "per_run.csv"):
        print(f"{name}: {out / name} ({'written' if (out / name).is_file() else 'missing'})")
    print((out / "summary.csv").read_text())
