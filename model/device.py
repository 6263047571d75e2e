"""Device selection and mixed precision, in one place so every entry point agrees."""
from __future__ import annotations

import contextlib
import functools
from contextvars import ContextVar
from typing import Iterator

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU. An unavailable explicit device is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available on this machine")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device {name!r} requested but MPS is not available on this machine")
    return dev


@functools.cache  # the hardware does not change within a process; asked at every dream step
def cpu_has_bf16_matmul() -> bool:
    """Does this CPU multiply bf16 in hardware: Intel AMX tiles, or AVX512-BF16 dot products (e.g. AMD Zen 4)?
    oneDNN's bf16 kernels then beat float32 (docs/benchmarks.md); elsewhere bf16 is emulated, slower than float32."""
    for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        probe = getattr(torch.cpu, name, None)
        try:
            if probe is not None and probe():
                return True
        except RuntimeError:
            continue
    return False


def autocast_dtype(device: torch.device, mode: str = "auto") -> torch.dtype | None:
    """``auto``: bf16 on CUDA and on CPUs with bf16 hardware, AMX or AVX512-BF16 (the published code trains the
    tokenizer and world model under bf16 autocast on any device; on such a CPU the steps are faster with the same
    loss curve, docs/benchmarks.md), float32 elsewhere; ``bf16``: bf16 everywhere; ``off``."""
    if mode == "off":
        return None
    if mode == "bf16":
        return torch.bfloat16
    if mode == "auto":
        fast = device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16_matmul())
        return torch.bfloat16 if fast else None
    raise ValueError(f"unknown autocast mode {mode!r} (auto|bf16|off)")


def autocast(device: torch.device, mode: str = "auto"):
    dtype = autocast_dtype(device, mode)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


# The conv nets' precision inside :func:`image_autocast` (read by model.nets.blocks Encoder/Decoder).
_IMAGE_AUTOCAST: ContextVar[tuple[str, torch.dtype] | None] = ContextVar("image_autocast", default=None)


def image_autocast_dtype(device: torch.device, mode: str | None) -> torch.dtype | None:
    """The dtype :func:`image_autocast` gives the conv nets (None: float32)."""
    if mode == "auto":
        return torch.bfloat16 if device.type == "cpu" and cpu_has_bf16_matmul() else None
    return autocast_dtype(device, mode) if mode is not None else None


@contextlib.contextmanager
def image_autocast(device: torch.device, mode: str | None) -> Iterator[None]:
    """The dream's precision: the conv nets (``model.nets.blocks`` Encoder and Decoder: the tokenizer's encoder,
    decoder and its view of x_{t-1}, the I-token CNN) under ``mode``'s autocast, everything else (the transformer,
    its heads, the motion head) in float32. Why: on a CPU with bf16 hardware bf16 convs run several times
    faster, while the transformer's batch-1 products read their weights once per token, and autocast would cast
    every weight again at every call (slower than float32). ``auto`` is bf16 only on such a CPU: on a GPU a dream
    at these sizes is bound by kernel launches, and float32 is faster there. ``mode`` None or ``off``: float32."""
    dtype = image_autocast_dtype(device, mode)
    token = _IMAGE_AUTOCAST.set((device.type, dtype) if dtype is not None else None)
    try:
        yield
    finally:
        _IMAGE_AUTOCAST.reset(token)


@contextlib.contextmanager
def image_region() -> Iterator[bool]:
    """Inside a conv net's forward: autocast as :func:`image_autocast` asked (yields True), else nothing."""
    setting = _IMAGE_AUTOCAST.get()
    if setting is None:
        yield False
        return
    with torch.autocast(device_type=setting[0], dtype=setting[1]):
        yield True
