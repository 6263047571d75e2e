"""Frame conversions between the store's uint8 HWC arrays and the networks' float CHW tensors."""
from __future__ import annotations

import numpy as np
import torch


def to_tensor(frames: np.ndarray | torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float32 (..., 3, H, W) in [0, 1]."""
    t = torch.as_tensor(frames, device=device)
    return t.movedim(-1, -3).float().div_(255.0)


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """float (..., 3, H, W) in [0, 1] -> uint8 (..., H, W, 3) numpy, clamped and rounded."""
    return frames.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).movedim(-3, -1).cpu().numpy()
