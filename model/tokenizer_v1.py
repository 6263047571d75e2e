"""The first cpu-preset Δ-tokenizer design, frozen because the bundled checkpoints were trained with it.

``decoder="residual_v1"``. It is the design the current ``residual`` decoder grew from (see
:class:`model.tokenizer.ResidualDeltaTokenizer` for the rationale): a U-Net decoder over x_{t-1} that
outputs a per-pixel softmax mix of x_{t-1} + delta and two copies of x_{t-1} advected by kernels
predicted from the tokens alone (unscaled logits). Its successor adds a per-action kernel table,
scaled logits and a plain-copy candidate, and learns the view scroll much sooner; this class only
exists so that checkpoints/ keeps loading exactly as it was trained. Do not change it.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from model.config import TokenizerConfig
from model.nets import Decoder, Encoder
from model.tokenizer import DeltaTokenizer, Tokenizer, _after_unshuffle, _init_weights, advect


class ResidualDeltaTokenizerV1(DeltaTokenizer):
    ADVECT_KERNELS = 2
    ADVECT_SIZE = 15

    def __init__(self, cfg: TokenizerConfig, num_actions: int) -> None:
        Tokenizer.__init__(self, cfg, num_actions)  # skips DeltaTokenizer's paper layers
        c, size = cfg, cfg.image_size
        mult, down = _after_unshuffle(tuple(c.mult), tuple(c.down))
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
        # 4 output maps at 64x64 (pixel-shuffled from 32x32): delta RGB, then 1 + m mask logits
        self.decoder = Decoder(dec_in, c.channels, mult, down, (3 + 1 + m) * 4, c.num_res_blocks, skip_channels=skip)
        self.kernel_head = nn.Sequential(nn.Conv2d(dec_in, 64, 3, padding=1), nn.SiLU(), nn.AdaptiveAvgPool2d(1),
                                         nn.Flatten(), nn.Linear(64, 64), nn.SiLU(), nn.Linear(64, m * k * k))
        self.quantizer = self._make_quantizer()
        self.apply(_init_weights)
        last = self.decoder.out[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        last.bias.data[3 * 4:4 * 4] = 5.0  # mask starts on x_{t-1} + delta (softmax weight ~0.99)
        nn.init.zeros_(self.kernel_head[-1].weight)  # kernels start uniform

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
        kernels = self.kernel_head(h).view(-1, self.ADVECT_KERNELS, self.ADVECT_SIZE**2).softmax(-1)
        moved = advect(prev, kernels.view(-1, self.ADVECT_KERNELS, self.ADVECT_SIZE, self.ADVECT_SIZE).to(prev.dtype))
        candidates = torch.cat([(prev + out[:, :3]).unsqueeze(1), moved], dim=1)  # (N, 1 + m, 3, H, W)
        return (out[:, 3:].softmax(dim=1).unsqueeze(2) * candidates).sum(dim=1)
