"""Frame tokenizers: the Δ-tokenizer (Δ-IRIS) and an IRIS-style frame-only baseline.

Both turn a latent map into K tokens the same way: the (N, C, R, R) map is cut into a
sqrt(K) x sqrt(K) grid of patches, each patch flattened and quantized to one of V codes
(:class:`model.nets.quantizer.Quantizer`). Δ: an 8x8 map in a 2x2 grid (K=4 patches of 4x4xC);
IRIS: a 4x4 (or 8x8) map with one token per position.

* :class:`DeltaTokenizer`, ``decoder="paper"`` (published design): the encoder sees x_{t-1}, a
  learned 64x64 plane for a_{t-1} and x_t; the decoder sees a CNN summary of x_{t-1} (8x8), an
  action embedding (8x8) and the quantized latent, so the tokens only carry what x_{t-1} and
  a_{t-1} do not predict.
* :class:`ResidualDeltaTokenizer`, ``decoder="residual"`` (cpu preset): same tokens and loss, but
  the decoder is a U-Net over x_{t-1} whose output mixes x_{t-1}, a correction of it and x_{t-1}
  moved by a per-frame kernel; it starts as a copy of x_{t-1}, so the deterministic part of a frame
  is nearly free instead of redrawn from a 512-number summary (docs/decisions.md).
* :class:`IrisTokenizer`: each frame alone, no perceptual loss (no VGG weights can be downloaded
  at run time) and no attention blocks in the conv nets.

All share the loss 0.1·L1 + L2 + 0.01·max-pixel L2 + commitment (weights from the config).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from model.nets import fastpath
from model.config import IMAGE_SIZE, TokenizerConfig
from model.nets.blocks import Decoder, Encoder, adapt_levels, after_unshuffle, num_downsamplings
from model.nets.quantizer import FSQuantizer, Quantizer, QuantizerOutput, batch_perplexity, codebook_usage

__all__ = ["build_tokenizer", "DeltaTokenizer", "ResidualDeltaTokenizer", "IrisTokenizer", "codebook_usage"]


def build_tokenizer(cfg: TokenizerConfig, num_actions: int) -> "Tokenizer":
    if cfg.kind == "iris":
        return IrisTokenizer(cfg, num_actions)
    if cfg.kind != "delta":
        raise ValueError(f"unknown tokenizer kind {cfg.kind!r} (delta|iris)")
    if cfg.decoder == "paper":
        return DeltaTokenizer(cfg, num_actions)
    if cfg.decoder == "residual":
        return ResidualDeltaTokenizer(cfg, num_actions)
    raise ValueError(f"unknown tokenizer decoder {cfg.decoder!r} (paper|residual)")


def grid_size(tokens_per_frame: int) -> int:
    g = math.isqrt(tokens_per_frame)
    if g * g != tokens_per_frame:
        raise ValueError(f"tokens_per_frame must be a square number, got {tokens_per_frame}")
    return g


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, (nn.Linear, nn.Embedding)):
        m.weight.data.normal_(0.0, 0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            m.bias.data.zero_()


class Tokenizer(nn.Module):
    """Shared patching, quantization, loss and public API. Subclasses define
    ``latent(prev, actions, frames) -> (N, C, R, R)`` and ``image(prev, actions, q_map) -> (N, 3, H, W)``
    (unclamped), and set ``latent_dim``, ``latent_res`` and ``quantizer``."""

    kind: str
    latent_dim: int
    latent_res: int
    quantizer: Quantizer

    def __init__(self, cfg: TokenizerConfig, num_actions: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_actions = num_actions
        self.tokens_per_frame = cfg.tokens_per_frame
        self.vocab_size = cfg.vocab_size
        self.grid = grid_size(cfg.tokens_per_frame)

    @property
    def bits_per_frame(self) -> float:
        """What a frame costs in this code: tokens x log2(vocabulary), the paper's comparison of tokenizers."""
        return self.tokens_per_frame * math.log2(self.vocab_size)

    def _make_quantizer(self) -> Quantizer:
        if self.latent_res % self.grid:
            raise ValueError(f"a {self.latent_res}x{self.latent_res} latent cannot be cut into a {self.grid}x{self.grid} grid")
        self.patch = self.latent_res // self.grid
        c = self.cfg
        if c.quantizer == "fsq":
            fsq = FSQuantizer(self.latent_dim * self.patch**2, c.fsq_levels, c.usage_decay)
            if fsq.vocab_size != c.vocab_size:
                raise ValueError(f"fsq_levels {tuple(c.fsq_levels)} give {fsq.vocab_size} codes, "
                                 f"but vocab_size is {c.vocab_size}")
            return fsq
        if c.quantizer != "vq":
            raise ValueError(f"unknown quantizer {c.quantizer!r} (vq|fsq)")
        return Quantizer(self.latent_dim * self.patch**2, c.vocab_size, c.code_dim, c.commitment, c.ema_decay,
                         c.usage_decay, c.revival)

    # --- latent map <-> per-token vectors -------------------------------------------------------
    def to_patches(self, z: torch.Tensor) -> torch.Tensor:
        """(N, C, R, R) latent map -> (N, K, p*p*C): one vector per patch, patches in row-major grid order."""
        return rearrange(z, "n c (gh ph) (gw pw) -> n (gh gw) (ph pw c)", gh=self.grid, gw=self.grid)

    def from_patches(self, q: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`to_patches`: (N, K, p*p*C) -> (N, C, R, R)."""
        return rearrange(q, "n (gh gw) (ph pw c) -> n c (gh ph) (gw pw)", gh=self.grid, ph=self.patch, pw=self.patch)

    def quantize(self, prev, actions, frames, update: bool = False) -> QuantizerOutput:
        return self.quantizer(self.to_patches(self.latent(prev, actions, frames)), update=update)

    # --- public API -------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, prev: torch.Tensor, actions: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """-> (N, K) long. Never touches the codebook (safe to call while the tokenizer trains)."""
        return self.quantize(prev, actions, frames).tokens

    @torch.no_grad()
    def decode(self, prev: torch.Tensor, actions: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """(N, K) tokens -> (N, 3, H, W) in [0, 1], contiguous NCHW (the CNNs may run channels-last
        on the fast path, see model/nets/blocks.py; callers get the usual layout)."""
        q = self.quantizer.embed(tokens.long())
        return self.image(prev, actions, self.from_patches(q)).float().clamp(0, 1).contiguous()

    @torch.no_grad()
    def reconstruct(self, prev, actions, frames) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.encode(prev, actions, frames)
        return self.decode(prev, actions, tokens), tokens  # exactly what decode(tokens) gives

    def compute_loss(self, prev, actions, frames, token_swap: float = 0.0,
                     pixel_weights: torch.Tensor | None = None,
                     decoder_prev: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """One training loss; updates the codebook (EMA, revival) when in train mode. A ``token_swap`` share of
        the pairs is decoded from another pair's quantized tokens (``train.tokenizer_token_swap``).
        ``pixel_weights`` (N, 1, H, W) scale each pixel's L1 and L2 terms (``cfg.strip_weight``).
        ``decoder_prev`` (default ``prev``) is the frame the decoder rebuilds from, e.g. a closed loop's
        reconstruction while the encoder reads the real pair.

        In train mode with autograd on and more than ``cfg.grad_chunk`` pairs, the gradients are
        computed a few pairs at a time (:func:`model.nets.fastpath.loss_in_chunks`), as in
        ``WorldModel.compute_loss``: each term is a sum over the chunk divided by the whole batch's
        count, so loss and gradients are those of one pass up to float summation order. Every chunk
        is quantized with the step's codebook (``update=False``); the EMA update and revival then run
        once with the whole batch's encodings and tokens, as in one pass (where the update also
        comes after quantizing and does not touch the step's gradients)."""
        n = frames.size(0)
        decoder_prev = prev if decoder_prev is None else decoder_prev
        chunk = fastpath.grad_chunk(self.cfg.grad_chunk, self.quantizer.codebook.device, cpu=16, other=128)
        params = [p for p in self.parameters() if p.requires_grad]
        if not (chunk and n > chunk and params and self.training and torch.is_grad_enabled()):
            out = self.quantize(prev, actions, frames, update=self.training)
            loss, stats = self._loss_terms(decoder_prev, actions, frames, out, n, token_swap, pixel_weights)
            return loss, self._metrics(stats, out.metrics)

        def terms(part: slice):
            out = self.quantize(prev[part], actions[part], frames[part], update=False)
            w = None if pixel_weights is None else pixel_weights[part]
            share, stats = self._loss_terms(decoder_prev[part], actions[part], frames[part], out, n, token_swap, w)
            return share, (stats, out.normalized, out.tokens)

        loss, extras = fastpath.loss_in_chunks(params, n, chunk, terms)
        stats = torch.stack([s for s, _, _ in extras]).sum(0)
        e = torch.cat([e for _, e, _ in extras])
        tokens = torch.cat([t for _, _, t in extras])
        q = self.quantizer
        qmetrics = {"codebook_perplexity": batch_perplexity(tokens, q.vocab_size),
                    "codewords_revived": float(q.update_codebook(e.flatten(0, -2), tokens.flatten())),
                    "codebook_entropy_bits": q.entropy_bits()}
        return loss, self._metrics(stats, qmetrics)

    def _loss_terms(self, prev, actions, frames, out: QuantizerOutput, n: int, token_swap: float = 0.0,
                    pixel_weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss of these pairs (quantized as ``out``) as their share of a batch of ``n`` pairs:
        sums divided by the batch's counts (pixels, frames; the commitment, a mean over this part's
        tokens, is scaled by its share of the pairs). Also the detached shares of
        [l1, l2, max_pixel, commitment, mse], which add up over the parts of a batch."""
        recon = self.image(prev, actions, self.from_patches(swap_tokens(out.q, token_swap))).float()
        loss, (l1, l2, max_pixel) = self.reconstruction_loss(frames, recon, n, pixel_weights)
        commitment = out.commitment * (frames.size(0) / n)
        loss = loss + commitment
        with torch.no_grad():
            mse = (frames.float() - recon.clamp(0, 1)).pow(2).sum() / (n * frames[0].numel())
            stats = torch.stack([l1.detach(), l2.detach(), max_pixel.detach(), commitment.detach().float(), mse])
        return loss, stats

    def reconstruction_loss(self, frames: torch.Tensor, recon: torch.Tensor, n: int | None = None,
                            pixel_weights: torch.Tensor | None = None) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """The pixel part of the loss, L1 + L2 + max-pixel L2 (weights ``cfg.*_weight``), as sums divided
        by a batch of ``n`` frames (default: these) -> (loss, (l1, l2, max_pixel)). ``pixel_weights`` (N, 1, H, W)
        scale the L1 and L2 terms per pixel."""
        n = frames.size(0) if n is None else n
        delta = frames.float() - recon.float()
        pixels = n * delta[0].numel()
        w = 1.0 if pixel_weights is None else pixel_weights.float()
        l1 = (w * delta.abs()).sum() / pixels
        l2 = (w * delta.pow(2)).sum() / pixels
        max_pixel = delta.pow(2).flatten(1).max(dim=1).values.sum() / n
        c = self.cfg
        return c.l1_weight * l1 + c.l2_weight * l2 + c.max_pixel_weight * max_pixel, (l1, l2, max_pixel)

    @staticmethod
    def _metrics(stats: torch.Tensor, quantizer_metrics: dict[str, float]) -> dict[str, float]:
        l1, l2, max_pixel, commitment, mse = stats.tolist()  # one host sync
        return {"l1": l1, "l2": l2, "max_pixel": max_pixel, "commitment": commitment, "mse": mse,
                "psnr": 10 * math.log10(1.0 / max(mse, 1e-10)), **quantizer_metrics}

    def latent(self, prev, actions, frames) -> torch.Tensor:
        raise NotImplementedError

    def image(self, prev, actions, q_map) -> torch.Tensor:
        raise NotImplementedError


class DeltaTokenizer(Tokenizer):
    """The published Δ-tokenizer (see module docstring)."""

    kind = "delta"

    def __init__(self, cfg: TokenizerConfig, num_actions: int) -> None:
        super().__init__(cfg, num_actions)
        size, c = IMAGE_SIZE, cfg
        self.latent_dim = c.latent_dim
        self.latent_res = size // 2 ** sum(c.down)
        self.encoder_action = nn.Embedding(num_actions, size * size)  # one learned plane per action
        self.encoder = Encoder(7, c.channels, c.mult, c.down, c.latent_dim, c.num_res_blocks)
        self.frame_cnn = Encoder(3, c.frame_cnn_channels, c.mult, c.down, c.frame_latent, c.num_res_blocks)
        self.decoder_action = nn.Embedding(num_actions, c.action_emb_dim * self.latent_res**2)
        self.decoder = Decoder(c.latent_dim + c.frame_latent + c.action_emb_dim, c.channels, c.mult, c.down, 3,
                               c.num_res_blocks, extra_blocks=c.decoder_extra_blocks)
        self.quantizer = self._make_quantizer()
        self.apply(_init_weights)

    def latent(self, prev, actions, frames):
        plane = self.encoder_action(actions).view(-1, 1, prev.size(2), prev.size(3)).to(prev.dtype)
        return self.encoder(torch.cat([prev, plane, frames], dim=1))

    def image(self, prev, actions, q_map):
        r = self.latent_res
        a = self.decoder_action(actions).view(-1, self.cfg.action_emb_dim, r, r).to(q_map.dtype)
        return self.decoder(torch.cat([self.frame_cnn(prev).to(q_map.dtype), a, q_map], dim=1))


def swap_tokens(q: torch.Tensor, share: float) -> torch.Tensor:
    """(N, K, D) quantized tokens with the first ``round(share * N)`` rows replaced by other rows' (a random
    derangement of those rows among all N, detached so that no pair's encoder learns from another's loss)."""
    m = round(share * q.size(0))
    if m == 0 or q.size(0) < 2:
        return q
    src = torch.randperm(q.size(0), device=q.device)[:m]
    src = torch.where(src == torch.arange(m, device=q.device), (src + 1) % q.size(0), src)
    return torch.cat([q[src].detach(), q[m:]])


class ResidualDeltaTokenizer(DeltaTokenizer):
    """cpu-preset Δ-tokenizer (same tokens, loss and API as the published one).

    The published decoder redraws the whole frame from an 8x8 summary of x_{t-1}, which a short CPU
    training does not get sharp. Here the decoder starts *as* the copy of x_{t-1} and learns changes:

    * Both networks work at 32x32 after a lossless pixel-unshuffle of the 64x64 input (4x cheaper
      than convolving at full resolution, no information lost).
    * Encoder input: x_{t-1}, the action plane, x_t and x_t - x_{t-1} (so changes are explicit).
    * Decoder: a U-Net. A CNN over (x_{t-1}, action plane) gives an 8x8 summary (concatenated with the
      tokens and the action embedding, as in the paper) and skip features at 16x16 and 32x32.
    * Output: a per-pixel mix (softmax masks) of x_{t-1}, x_{t-1} + delta and ``ADVECT_KERNELS`` copies of
      x_{t-1} moved by ``ADVECT_SIZE``-wide kernels predicted from the action and the tokens, one set
      per frame (CDNA-style advection, Finn et al. 2016). A whole-view scroll (a Crafter move: 7
      pixels) is then one kernel per action and a mask switched on by the tokens, learnt in a few
      hundred steps, instead of a shift every conv layer must learn to draw.
      The delta and mask layers start at zero with the mask on the first two, so training starts
      from the copy-x_{t-1} baseline; the plain x_{t-1} keeps unchanged pixels exact.
    """

    ADVECT_KERNELS = 1
    ADVECT_SIZE = 15  # displacements up to 7 px each way: one Crafter tile
    # Kernel logits = ACTION_SCALE * (a learned table per action) + TOKEN_SCALE * (a head over the
    # tokens and the x_{t-1} summary). The scales let a kernel become one sharp displacement in a few
    # hundred AdamW steps; unscaled, logits move ~lr per step: thousands of steps at lr 3e-4.
    ACTION_TABLE = True
    ACTION_SCALE = 100.0
    TOKEN_SCALE = 10.0
    PLAIN_COPY = True  # x_{t-1} itself is a mask candidate (unchanged pixels stay exact)

    def __init__(self, cfg: TokenizerConfig, num_actions: int) -> None:
        Tokenizer.__init__(self, cfg, num_actions)  # skips DeltaTokenizer's paper layers
        c, size = cfg, IMAGE_SIZE
        mult, down = after_unshuffle(tuple(c.mult), tuple(c.down))
        self.latent_dim = c.latent_dim
        self.latent_res = size // 2 // 2 ** sum(down)
        self.encoder_action = nn.Embedding(num_actions, size * size)
        self.encoder = Encoder(10 * 4, c.channels, mult, down, c.latent_dim, c.num_res_blocks)
        self.prev_action = nn.Embedding(num_actions, size * size)
        self.frame_cnn = Encoder(4 * 4, c.frame_cnn_channels, mult, down, c.frame_latent, c.num_res_blocks)
        self.decoder_action = nn.Embedding(num_actions, c.action_emb_dim * self.latent_res**2)
        skip = [ch if d else 0 for ch, d in zip(self.frame_cnn.level_channels, down)]
        dec_in = c.latent_dim + c.frame_latent + c.action_emb_dim
        m, k = self.ADVECT_KERNELS, self.ADVECT_SIZE
        fixed = 2 if self.PLAIN_COPY else 1  # candidates not moved: [x_{t-1}], x_{t-1} + delta
        # output maps at 64x64 (pixel-shuffled from 32x32): delta RGB, then fixed + m mask logits
        self.decoder = Decoder(dec_in, c.channels, mult, down, (3 + fixed + m) * 4, c.num_res_blocks,
                               skip_channels=skip, extra_blocks=c.decoder_extra_blocks)
        if self.ACTION_TABLE:
            self.action_kernels = nn.Embedding(num_actions, m * k * k)
        self.kernel_head = nn.Sequential(nn.Conv2d(dec_in, 64, 3, padding=1), nn.SiLU(), nn.AdaptiveAvgPool2d(1),
                                         nn.Flatten(), nn.Linear(64, 64), nn.SiLU(), nn.Linear(64, m * k * k))
        self.quantizer = self._make_quantizer()
        self.apply(_init_weights)
        last = self.decoder.out[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        last.bias.data[3 * 4:(3 + fixed) * 4] = 5.0  # mask starts on the unmoved candidates (weight ~0.99)
        nn.init.zeros_(self.kernel_head[-1].weight)  # kernels start uniform
        if self.ACTION_TABLE:
            nn.init.zeros_(self.action_kernels.weight)

    def _plane(self, emb: nn.Embedding, actions, like):
        return emb(actions).view(-1, 1, like.size(2), like.size(3)).to(like.dtype)

    def latent(self, prev, actions, frames):
        x = torch.cat([prev, self._plane(self.encoder_action, actions, prev), frames, frames - prev], dim=1)
        return self.encoder(F.pixel_unshuffle(x, 2))

    def image(self, prev, actions, q_map):
        x = torch.cat([prev, self._plane(self.prev_action, actions, prev)], dim=1)
        summary, skips = self.frame_cnn(F.pixel_unshuffle(x, 2), return_skips=True)
        r = self.latent_res
        a = self.decoder_action(actions).view(-1, self.cfg.action_emb_dim, r, r).to(q_map.dtype)
        h = torch.cat([summary.to(q_map.dtype), a, q_map], dim=1)
        out = F.pixel_shuffle(self.decoder(h, skips), 2).to(prev.dtype)
        logits = self.kernel_head(h)
        if self.ACTION_TABLE:
            logits = self.ACTION_SCALE * self.action_kernels(actions) + self.TOKEN_SCALE * logits
        kernels = logits.view(-1, self.ADVECT_KERNELS, self.ADVECT_SIZE**2).softmax(-1)
        moved = advect(prev, kernels.view(-1, self.ADVECT_KERNELS, self.ADVECT_SIZE, self.ADVECT_SIZE).to(prev.dtype))
        fixed = [prev, prev + out[:, :3]] if self.PLAIN_COPY else [prev + out[:, :3]]
        candidates = torch.cat([torch.stack(fixed, dim=1), moved], dim=1)  # (N, fixed + m, 3, H, W)
        return (out[:, 3:].softmax(dim=1).unsqueeze(2) * candidates).sum(dim=1)


def advect(img: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Convolve each image with its own kernels ("same" size, zero padding), through FFTs (a grouped
    15x15 conv is much slower on CPU). img (N, C, H, W), kernels (N, M, k, k) -> (N, M, C, H, W)."""
    h, w = img.shape[-2:]
    k = kernels.shape[-1]
    size = (h + k - 1, w + k - 1)  # full linear convolution, no wrap-around
    f = torch.fft.rfft2(img.float(), s=size)[:, None] * torch.fft.rfft2(kernels.float(), s=size)[:, :, None]
    p = k // 2
    return torch.fft.irfft2(f, s=size)[..., p:p + h, p:p + w].to(img.dtype)


class IrisTokenizer(Tokenizer):
    """IRIS-style baseline: one frame -> a sqrt(K) x sqrt(K) map, one token per position; the decoder
    sees the tokens only. The preset's widths are kept and downsamplings added or removed to reach
    the token grid (4 from 64x64 to 4x4); not ``decoder_extra_blocks``, so a Δ-decoder grown after training leaves
    the baseline as it was. ``prev`` and ``actions`` are accepted and ignored."""

    kind = "iris"

    def __init__(self, cfg: TokenizerConfig, num_actions: int) -> None:
        super().__init__(cfg, num_actions)
        c = cfg
        mult, down = adapt_levels(c.mult, c.down, num_downsamplings(IMAGE_SIZE, self.grid))
        self.latent_dim = c.latent_dim
        self.latent_res = self.grid
        self.encoder = Encoder(3, c.channels, mult, down, c.latent_dim, c.num_res_blocks)
        self.decoder = Decoder(c.latent_dim, c.channels, mult, down, 3, c.num_res_blocks)
        self.quantizer = self._make_quantizer()
        self.apply(_init_weights)

    def latent(self, prev, actions, frames):
        return self.encoder(frames)

    def image(self, prev, actions, q_map):
        return self.decoder(q_map)
