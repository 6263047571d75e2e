"""Convolutional building blocks shared by the tokenizers, the world model's I-token CNN and the
actor-critic: residual blocks (GroupNorm + SiLU), x2 down/up sampling, a level-structured
``Encoder``/``Decoder`` pair and ``FrameCNN``, the small encoder that summarises a frame as an 8x8 map.

A network is described like the published Δ-IRIS convnets: a base width ``channels``, per-level
width multipliers ``mult`` and per-level flags ``down`` (1 = halve the resolution after that level).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from model.device import image_region
from model.nets import fastpath


def group_norm(ch: int) -> nn.GroupNorm:
    """32 groups as in the paper when the width allows it (narrow test nets use fewer)."""
    return nn.GroupNorm(math.gcd(32, ch), ch)


class ResBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.f = nn.Sequential(
            group_norm(in_ch), nn.SiLU(),
            nn.Conv2d(in_ch, out_ch, 3, padding=1),
            group_norm(out_ch), nn.SiLU(),
            nn.Conv2d(out_ch, out_ch, 3, padding=1),
        )
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.f(x)


class Downsample(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def adapt_levels(mult: Sequence[int], down: Sequence[int], num_down: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Change a level plan so that it downsamples exactly ``num_down`` times: add downsamplings on
    the last levels first (appending levels of the last width if needed), or drop them from the end.
    Used to reach a given token grid (IRIS 4x4 or 8x8) or feature size from any preset's widths."""
    mult, down = list(mult), list(down)
    i = len(down) - 1
    while sum(down) < num_down and i >= 0:
        down[i] = 1
        i -= 1
    while sum(down) < num_down:
        mult.append(mult[-1])
        down.append(1)
    i = len(down) - 1
    while sum(down) > num_down:
        if down[i]:
            down[i] = 0
        i -= 1
    return tuple(mult), tuple(down)


def num_downsamplings(size: int, out_size: int) -> int:
    n = int(round(math.log2(size / out_size)))
    if out_size * 2**n != size:
        raise ValueError(f"cannot reach {out_size}x{out_size} from {size}x{size} by halving")
    return n


def after_unshuffle(mult: tuple[int, ...], down: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """A level plan for a network that starts with a lossless 2x2 pixel-unshuffle, which replaces the
    first level when that level downsamples (as in every preset), else the first downsampling."""
    if down[0] and len(down) > 1:
        return tuple(mult[1:]), tuple(down[1:])
    if 1 not in down:
        raise ValueError("a network that starts with a pixel-unshuffle needs at least one downsampling level")
    d = list(down)
    d[d.index(1)] = 0
    return tuple(mult), tuple(d)


class Encoder(nn.Module):
    """stem conv -> per level: ``num_res_blocks`` ResBlocks (then a x2 downsample where ``down``) ->
    GroupNorm, SiLU, conv to ``latent`` channels.

    ``forward(x, return_skips=True)`` also returns each level's last feature map (before its
    downsample), highest resolution first, for U-Net style decoders.

    Encoders and decoders run channels-last on the fast path (``fastpath.channels_last``: inference
    only, same values), where oneDNN's NHWC conv kernels are faster than its NCHW ones."""

    def __init__(self, in_ch: int, channels: int, mult: Sequence[int], down: Sequence[int], latent: int,
                 num_res_blocks: int = 1) -> None:
        super().__init__()
        assert len(mult) == len(down), "mult and down need one entry per level"
        self.down = tuple(down)
        self.level_channels = tuple(channels * m for m in mult)
        self.stem = nn.Conv2d(in_ch, channels, 3, padding=1)
        self.levels = nn.ModuleList()
        self.downs = nn.ModuleList()
        ch = channels
        for out_ch, d in zip(self.level_channels, down):
            blocks = []
            for _ in range(num_res_blocks):
                blocks.append(ResBlock(ch, out_ch))
                ch = out_ch
            self.levels.append(nn.Sequential(*blocks))
            self.downs.append(Downsample(ch) if d else nn.Identity())
        self.out = nn.Sequential(group_norm(ch), nn.SiLU(), nn.Conv2d(ch, latent, 3, padding=1))

    def forward(self, x: torch.Tensor, return_skips: bool = False):
        with image_region() as reduced:
            x = self.stem(fastpath.channels_last(x))
            skips = []
            for level, down in zip(self.levels, self.downs):
                x = level(x)
                skips.append(x)
                x = down(x)
            z = self.out(x)
        z = z.float() if reduced else z  # the float32 layers after it take it as it is
        return (z, skips) if return_skips else z


class Decoder(nn.Module):
    """Mirror of :class:`Encoder`: conv from ``latent`` channels -> per level, deepest first: x2
    upsample where that level downsampled, then ResBlocks -> GroupNorm, SiLU, conv to ``out_ch``.

    ``skip_channels[i]`` > 0 concatenates an extra feature map (given to ``forward``) at level ``i``
    right after its upsample (or at its start), which makes a U-Net with an Encoder's skips.
    ``extra_blocks`` ResBlocks of the level's output width end each level (a decoder deeper than its encoder)."""

    def __init__(self, latent: int, channels: int, mult: Sequence[int], down: Sequence[int], out_ch: int = 3,
                 num_res_blocks: int = 1, skip_channels: Sequence[int] | None = None, extra_blocks: int = 0) -> None:
        super().__init__()
        assert len(mult) == len(down), "mult and down need one entry per level"
        self.down = tuple(down)
        self.skip_channels = tuple(skip_channels) if skip_channels is not None else (0,) * len(mult)
        chs = [channels * m for m in mult]
        ch = chs[-1]
        self.inp = nn.Conv2d(latent, ch, 3, padding=1)
        self.ups = nn.ModuleList()
        self.levels = nn.ModuleList()
        for i in reversed(range(len(mult))):
            self.ups.append(Upsample(ch) if down[i] else nn.Identity())
            ch += self.skip_channels[i]
            # level i narrows from its width to the width of level i-1, mirroring the encoder
            widths = [chs[i]] * (num_res_blocks - 1) + [chs[i - 1] if i > 0 else channels] * (1 + extra_blocks)
            blocks = []
            for w in widths:
                blocks.append(ResBlock(ch, w))
                ch = w
            self.levels.append(nn.Sequential(*blocks))
        self.out = nn.Sequential(group_norm(ch), nn.SiLU(), nn.Conv2d(ch, out_ch, 3, padding=1))

    def forward(self, z: torch.Tensor, skips: Sequence[torch.Tensor | None] | None = None) -> torch.Tensor:
        with image_region() as reduced:
            x = self.inp(fastpath.channels_last(z))
            n = len(self.levels)
            for j, (up, level) in enumerate(zip(self.ups, self.levels)):
                i = n - 1 - j
                x = up(x)
                if self.skip_channels[i]:
                    x = torch.cat([x, skips[i].to(x.dtype)], dim=1)
                x = level(x)
            out = self.out(x)
        return out.float() if reduced else out


class FrameCNN(nn.Module):
    """A frame (or any ``in_ch`` image) -> ``(N, latent, out_size, out_size)`` summary.

    The published Δ-IRIS uses this shape three times: the tokenizer decoder's view of x_{t-1}
    (64 ch, latent 8), the world model's I-token (32 ch, latent 8) and the actor-critic's encoder
    (32 ch, latent 16), all with multipliers (1, 1, 2, 2, 4) and downsampling (1, 0, 1, 1, 0)."""

    def __init__(self, in_ch: int = 3, channels: int = 32, latent: int = 8, image_size: int = 64,
                 out_size: int = 8, mult: Sequence[int] = (1, 1, 2, 2, 4), down: Sequence[int] = (1, 0, 1, 1, 0),
                 num_res_blocks: int = 1, unshuffle: bool = False, pool: bool = False,
                 keypoints: bool = False) -> None:
        super().__init__()
        mult, down = adapt_levels(mult, down, num_downsamplings(image_size, out_size))
        # pool: ``features`` also gives each channel's max over the map. Why: a local pattern (a coin next
        # to the agent) then has one feature wherever it occurs; flattened alone, the next linear layer
        # learns it separately at each of the out_size**2 positions, from a few examples each.
        self.pool = pool
        # keypoints: ``features`` also gives each channel's soft-argmax, the expected (row, col) in [-1, 1] under
        # a softmax over the map (a spatial softmax, Levine et al. 2016). Why: where one thing is relative to
        # another ("the coin is right of the agent") is then a difference of two features, which a linear
        # policy reads at once; from the flattened map it takes a learned conjunction per pair of positions.
        self.keypoints = keypoints
        self.out_dim = latent * (out_size * out_size + int(pool) + 2 * int(keypoints))
        # unshuffle: start with a lossless 2x2 pixel-unshuffle instead of the full-resolution first level,
        # which costs about half of this network's compute (the cpu preset's GridWorld setting).
        self.unshuffle = unshuffle
        if unshuffle:
            mult, down = after_unshuffle(tuple(mult), tuple(down))
            in_ch *= 4
        self.out_shape = (latent, out_size, out_size)
        self.net = Encoder(in_ch, channels, mult, down, latent, num_res_blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(F.pixel_unshuffle(x, 2) if self.unshuffle else x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, out_dim): the flattened map, then (with ``pool``) its max per channel, then
        (with ``keypoints``) its soft-argmax rows and columns per channel."""
        m = self(fastpath.channels_last(x))
        parts = [m.flatten(1)]
        if self.pool:
            parts.append(m.amax(dim=(2, 3)))
        if self.keypoints:
            parts.extend(soft_argmax(m))
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]


def soft_argmax(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C, H, W) map -> expected row and column per channel, each (N, C) in [-1, 1], under a softmax
    over the H*W positions of that channel."""
    n, c, h, w = m.shape
    p = torch.softmax(m.float().flatten(2), dim=-1).view(n, c, h, w)
    rows = torch.linspace(-1.0, 1.0, h, device=m.device)
    cols = torch.linspace(-1.0, 1.0, w, device=m.device)
    return (p.sum(3) * rows).sum(2).to(m.dtype), (p.sum(2) * cols).sum(2).to(m.dtype)
