"""The recurrent search cell, fused per node against the per-edge reference: one forward + backward
over a BPTT segment at DARTS' search size (hidden 300, batch 64, 35 steps, dropouts as the search's,
one thread), interleaved, 5 timed repetitions after 2 warm-ups; prints medians, the ratio and the
load average before and after.

    python bench/bench_rnn_cell.py
"""
import os
import statistics
import time

import torch

from dnas.spaces.recurrent import RNN_OPS
from dnas.supernet.recurrent import FusedRecurrentCell, ReferenceRecurrentCell

torch.set_num_threads(1)
print("load before", os.getloadavg())
H, B, T = 300, 64, 35
kinds = (("fused", FusedRecurrentCell), ("reference", ReferenceRecurrentCell))
cells = {k: cls(H, H, RNN_OPS, 8, dropout_x=0.75, dropout_h=0.25) for k, cls in kinds}
cells["reference"].load_state_dict(cells["fused"].state_dict())
x, h = torch.randn(T, B, H), torch.zeros(B, H)
alpha = torch.randn(36, 5, requires_grad=True)
times = {k: [] for k in cells}
for _ in range(7):
    for k, cell in cells.items():
        cell.train()
        t = time.perf_counter()
        out, last = cell(x, h, torch.softmax(alpha, -1))
        out.sum().backward()
        times[k].append(time.perf_counter() - t)
for k, v in times.items():
    v = v[2:]
    print(f"{k}: median {statistics.median(v):.3f} s (min {min(v):.3f}, max {max(v):.3f})")
print(f"reference / fused: {statistics.median(times['reference'][2:]) / statistics.median(times['fused'][2:]):.2f}")
print("load after", os.getloadavg())
