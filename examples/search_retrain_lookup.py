"""Search → retrain → look up: the whole path of a cell, at a size that runs in seconds.

Searches the NAS-Bench-201 space with first-order DARTS on the embedded digits images, retrains the
found cell from scratch for one epoch, and looks the cell up in a NAS-Bench-201 table when one is
given (a CSV or Parquet export, e.g. from `dnas bench export`)::

    python examples/search_retrain_lookup.py [TABLE] [--out DIR]

Raise `epochs`, `channels`, `layers` and `max_images` (or drop them for the presets' sizes) for a
real search.
"""

import argparse
import tempfile

import dnas

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("table", nargs="?", help="a NAS-Bench-201 table (.csv or .parquet)")
parser.add_argument("--out", default=None, help="folder for the two run directories (default: a temporary one)")
args = parser.parse_args()
out = args.out or tempfile.mkdtemp(prefix="dnas-example-")
tiny = {"channels": 4, "layers": 1, "max_images": 64, "batch_size": 16, "epochs": 1}

found = dnas.search(space="nb201", method="darts", dataset="digits", out=f"{out}/search", **tiny)
print("found cell:", found.genotype.describe())

trained = dnas.train(found.genotype_file, dataset="digits", out=f"{out}/train", **tiny)
print(f"retrained: test accuracy {100 * trained.result['test_acc']:.1f}% after {tiny['epochs']} epoch(s)")

if args.table is None:
    print("no NAS-Bench-201 table given: pass one (e.g. from `dnas bench export`) to look the cell up")
else:
    row = dnas.query(found.genotype, table=args.table)
    print("benchmark row:", row if row is not None else "the table has no row for this cell")
