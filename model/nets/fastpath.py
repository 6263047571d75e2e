"""One switch for the fast path of the hot loops (dream steps, imagination), and the chunked
training gradients.

The fast path changes how the networks run, never what they compute. What it does (only with
autograd off, i.e. inference):

* :func:`channels_last`: image inputs of the conv nets (``model.nets.blocks`` Encoder/Decoder, the world
  model's I-token CNN, the actor-critic's CNN) in channels-last memory layout, so oneDNN (cuDNN on a
  GPU) picks its NHWC conv kernels.
* ``model.nets.world_model.Linear``: on CPU with more than one thread, a product with at most 8 rows
  (batch-1 generation) is split into one block of output rows per thread and run as a ``bmm``.

Results agree with the plain path up to float rounding (tests/model/nets/test_fastpath.py measures
how far on a trained model). Reduced precision is a separate, explicit choice: ``model.device.autocast`` (bf16),
off by default on CPU.

``plain()`` turns the fast path off, e.g. to benchmark or test against the straightforward NCHW
float32 path::

    with fastpath.plain():
        frame = dream.step(actions)

The switch is process-wide (read at call time), not per thread.

Training memory (not affected by the switch): :func:`loss_in_chunks` computes a batch's gradients
chunk by chunk (exactly, see there; :class:`PrecomputedGrads` carries them to ``loss.backward()``),
with chunk sizes from :func:`grad_chunk`. ``Tokenizer.compute_loss`` and ``WorldModel.compute_loss``
use it for batches larger than their config's ``grad_chunk``.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

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
    """An image batch (N, C, H, W) in channels-last layout on the fast path without autograd;
    unchanged otherwise. Same values and shape: only the memory order differs, so convs pick their
    NHWC kernels. Not under autograd: on CPU the NHWC weight-gradient and GroupNorm backward kernels
    are slower than the NCHW ones, so training steps would be slower."""
    if _enabled and x.dim() == 4 and not torch.is_grad_enabled():
        return x.contiguous(memory_format=torch.channels_last)
    return x


# ---------------------------------------------------------------------------------------- training


def grad_chunk(requested: int, device: torch.device, cpu: int, other: int) -> int:
    """Chunk size for :func:`loss_in_chunks`: ``requested`` if >= 0 (0 = whole batch), else the
    device's default. On CPU small chunks are faster, not only lighter: each chunk's activations are
    reused from the allocator instead of fresh (page-faulting) buffers, and stay in cache. On a GPU
    large batches keep it busy."""
    if requested >= 0:
        return requested
    return cpu if device.type == "cpu" else other


class PrecomputedGrads(torch.autograd.Function):
    """A loss value whose parameter gradients were computed already: its backward hands each
    parameter its gradient times the incoming gradient (1 for ``loss.backward()``)."""

    @staticmethod
    def forward(ctx, value: torch.Tensor, grads: list, *params: torch.Tensor) -> torch.Tensor:
        ctx.grads = grads
        return value.clone()

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        return (None, None, *(None if g is None else g * grad_out for g in ctx.grads))


def loss_in_chunks(params: list[torch.Tensor], n: int, chunk: int,
                   terms: Callable[[slice], tuple[torch.Tensor, Any]]) -> tuple[torch.Tensor, list[Any]]:
    """A loss that is a sum over parts of a batch, computed part by part with bounded memory.

    ``terms(part)`` returns that part's (already weighted) share of the loss and anything else the
    caller wants back. Each share is differentiated right away (its activations are freed before the
    next part runs) and the summed gradients travel with the returned loss, so the caller's
    ``loss.backward()`` fills ``.grad`` exactly as one pass over the whole batch would, up to float
    summation order. Returns (loss, the extras in part order)."""
    grads: list[torch.Tensor | None] = [None] * len(params)
    total: torch.Tensor | float = 0.0
    extras = []
    for lo in range(0, n, chunk):
        share, extra = terms(slice(lo, min(n, lo + chunk)))
        for i, g in enumerate(torch.autograd.grad(share, params, allow_unused=True)):
            if g is not None:
                grads[i] = g if grads[i] is None else grads[i].add_(g)
        total = total + share.detach()
        extras.append(extra)
    return PrecomputedGrads.apply(total, grads, *params), extras


def linear(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    """``layer(x)`` with the split rule of :class:`Linear`, without a module call (the world model's lean
    single-token pass, ``WorldModel._trunk_token``, calls it directly)."""
    rows, g = x.numel() // x.size(-1), torch.get_num_threads()
    out = layer.out_features
    if (rows <= 8 and g > 1 and out % g == 0 and x.device.type == "cpu"
            and _enabled and not torch.is_grad_enabled()):
        flat = x.reshape(rows, layer.in_features).t().unsqueeze(0).expand(g, -1, -1)
        y = torch.bmm(layer.weight.view(g, out // g, layer.in_features), flat.to(layer.weight.dtype))
        y = y.reshape(out, rows).t()
        if layer.bias is not None:
            y = y + layer.bias
        return y.reshape(*x.shape[:-1], out)
    return F.linear(x, layer.weight, layer.bias)


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, same result up to float rounding) that spreads a product with
    a few rows over the CPU threads. Batch-1 generation multiplies 1-3 token vectors by each weight
    matrix: the cost is streaming the weights from memory (~40 MB per transformer pass), and MKL runs
    such a product on one thread. Cutting the weight into one block of output rows per thread and
    using ``bmm`` puts every core's memory bandwidth to work.
    Fast path, CPU, no autograd, more than one thread only."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self)
