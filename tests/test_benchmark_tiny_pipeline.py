"""benchmarks/tiny_pipeline.py's step clock: the timed steps run uncounted, the steps after them count their weight
products' FLOPs (the stage's matmul floor is built on them)."""

import sys
from types import SimpleNamespace

import torch

from llavamed_lite.paths import REPO_ROOT


def test_the_clock_times_the_first_steps_and_counts_the_flops_of_the_rest(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO_ROOT / "benchmarks"))
    sys.modules.pop("tiny_pipeline", None)
    from tiny_pipeline import StepClock

    layer = torch.nn.Linear(32, 16, bias=False)
    x = torch.randn(8, 32)
    clock = StepClock(timed_steps=2)
    for step in range(5):  # a warm-up step, 2 timed, 2 counted
        state = SimpleNamespace(global_step=step)
        clock.on_step_begin(None, state, None)
        layer(x).sum().backward()
        clock.on_step_end(None, state, None)
    assert len(clock.times) == 3  # the warm-up's end starts the clock
    assert clock.counted_steps == 2
    # forward x @ W.T, then the gradients of W (and not of x, which needs none): 2 products of 2 * 8 * 32 * 16
    assert clock.flops == 2 * (2 * 2 * 8 * 32 * 16)
