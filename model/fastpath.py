"""One switch for the fast path of the hot loops (dream steps, imagination, training steps).

The fast path changes how the networks run, never what they compute: activations in channels-last
memory layout (oneDNN's and cuDNN's fast conv kernels), exact algebraic rewrites (see
``model.nets.Upsample``), cached derived weights. Results agree with the plain path up to float
rounding (tests/test_fastpath.py measures how far on a trained model). Reduced precision is a
separate, explicit choice: ``model.device.autocast`` (bf16), off by default on CPU.

``plain()`` turns the fast path off, e.g. to benchmark or test against the straightforward NCHW
float32 path::

    with fastpath.plain():
        frame = dream.step(actions)

The switch is process-wide (read at call time), not per thread.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch

_enabled = True


def enabled() -> bool:
    return _enabled


def set_enabled(flag: bool) -> None:
    global _enabled
    _enabled = bool(flag)


@contextlib.contextmanager
def plain() -> Iterator[None]:
    """Run the block on the plain path (NCHW, no rewrites), restoring the previous setting after."""
    global _enabled
    before, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = before


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """An image batch (N, C, H, W) in channels-last layout on the fast path; unchanged otherwise.
    Same values and shape: only the memory order differs, so convs pick their NHWC kernels."""
    if _enabled and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x
