"""Mixed precision (``precision=bf16|fp16``): the forward passes run in 16 bits and everything else in
float32; fp16's loss scales skip a step whose gradients overflow; a search resumes identically; the
estimators and regularizers that need float32 are refused in one sentence."""

from __future__ import annotations

import pytest
import torch

from dnas.bilevel.run import Search
from dnas.bilevel.step import SearchStep
from dnas.config.resolve import resolve_config
from dnas.errors import DnasError
from dnas.runtime.runner import Position


def _step(precision: str, tiny) -> SearchStep:
    cfg = resolve_config({"epochs": 2, "batch_size": 16}, [*tiny, "max_images=96", f"precision={precision}"])
    return SearchStep(cfg)


@pytest.mark.parametrize("precision,dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_the_forward_passes_run_in_16_bits_and_the_parameters_stay_float32(precision, dtype, tiny):
    search = _step(precision, tiny)
    seen = []
    stem = search.problem.net.stem[0]
    handle = stem.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    search.begin_epoch(0)
    output = search.iterate(Position(0, 0, 0, 2, search.steps_per_epoch))
    handle.remove()
    assert seen and set(seen) == {dtype}
    assert all(p.dtype == torch.float32 for p in [*search.problem.weights, *search.problem.arch])
    assert all(torch.isfinite(o.loss) and o.loss.dtype == torch.float32 for o in output.observations)
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in search.problem.arch)


def test_fp16_skips_a_weight_step_whose_scaled_gradients_overflow(tiny):
    search = _step("fp16", tiny)
    search.precision.weight_scaler = torch.amp.GradScaler("cpu", init_scale=2.0**120)  # overflows float16
    before = [p.detach().clone() for p in search.problem.weights]
    search.begin_epoch(0)
    search.iterate(Position(0, 0, 0, 2, search.steps_per_epoch))
    assert all(torch.equal(a, b) for a, b in zip(before, search.problem.weights, strict=True))
    assert search.precision.weight_scaler.get_scale() == 2.0**119  # halved after the skipped step
    search.iterate(Position(0, 1, 1, 2, search.steps_per_epoch))
    assert search.precision.weight_scaler.get_scale() < 2.0**119


def test_a_mixed_precision_search_resumes_to_the_same_result(tiny_search, tmp_path, interrupt_at):
    extra = ["max_images=96", "precision=fp16", "checkpoint_every=2"]
    reference = tiny_search(epochs=2, name="ref", overrides=extra)
    genotype = reference.run()
    interrupt_at(Search, 3)
    with pytest.raises(DnasError, match="interrupted"):
        tiny_search(epochs=2, name="resumed", overrides=extra).run()
    interrupt_at(Search, None)
    resumed = tiny_search(epochs=2, name="resumed", overrides=extra)
    assert resumed.run() == genotype
    assert torch.equal(resumed.problem.alphas["cell"], reference.problem.alphas["cell"])
    scales = [run.algorithm.precision.weight_scaler.get_scale() for run in (resumed, reference)]
    assert scales[0] == scales[1]


@pytest.mark.parametrize("overrides,message", [
    (["precision=bf16", "estimator=second-order"], "first-order estimator only"),
    (["precision=fp16", "estimator=amended"], "first-order estimator only"),
    (["precision=bf16", "weight_regularizers=lambda"], "Lambda-DARTS"),
    (["precision=fp8"], "precision must be one of fp32, bf16, fp16"),
])
def test_what_needs_float32_is_refused(overrides, message):
    with pytest.raises(DnasError, match=message):
        resolve_config(None, overrides)
