"""A Δ-tokenizer whose tokens say *what* appears, not how it differs from x_{t-1} (``decoder="paint"``).

The residual decoder draws a change as x_{t-1} + delta, with a U-Net that reads x_{t-1}. The cheapest code for
terrain that scrolls into view is then relative to the previous frame: it only means something on that exact
frame. Decoded on a dream's own frames, even the real tokens turn new terrain into smears within a few moves,
and a world model has to learn a code that changes meaning with every context.

Here the pixels that change are *painted* by a decoder that sees the tokens and the action only; the U-Net that
reads x_{t-1} only chooses, per pixel, between x_{t-1}, x_{t-1} moved by the advection kernels, and the paint
(plus a global colour shift of the copies, for Crafter's slow day-night light). Content carried over stays exact
under any number of scrolls, and a token means the same in every context, so codes of new terrain repeat across
the world.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from model.config import TokenizerConfig
from model.nets.blocks import Decoder, after_unshuffle
from model.nets.tokenizer import ResidualDeltaTokenizer, init_weights

COLOUR = 6  # per-channel gain and offset of the copied candidates


class PaintDeltaTokenizer(ResidualDeltaTokenizer):
    def __init__(self, cfg: TokenizerConfig, num_actions: int) -> None:
        super().__init__(cfg, num_actions)
        c = cfg
        mult, down = after_unshuffle(tuple(c.mult), tuple(c.down))
        m, k = self.ADVECT_KERNELS, self.ADVECT_SIZE
        dec_in = c.latent_dim + c.frame_latent + c.action_emb_dim
        skip = [ch if d else 0 for ch, d in zip(self.frame_cnn.level_channels, down)]
        # mask logits at 64x64 (pixel-shuffled from 32x32) for [x_{t-1}, paint, m moved copies]
        self.decoder = Decoder(dec_in, c.channels, mult, down, (2 + m) * 4, c.num_res_blocks, skip_channels=skip)
        self.painter = Decoder(c.latent_dim + c.action_emb_dim, c.channels, mult, down, 3 * 4, c.num_res_blocks)
        self.kernel_head = nn.Sequential(nn.Conv2d(dec_in, 64, 3, padding=1), nn.SiLU(), nn.AdaptiveAvgPool2d(1),
                                         nn.Flatten(), nn.Linear(64, 64), nn.SiLU(), nn.Linear(64, m * k * k + COLOUR))
        for module in (self.decoder, self.painter, self.kernel_head):
            module.apply(init_weights)
        last = self.decoder.out[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        last.bias.data[:4] = 5.0  # the mask starts on x_{t-1}: training starts from the copy baseline
        nn.init.zeros_(self.kernel_head[-1].weight)
        nn.init.zeros_(self.kernel_head[-1].bias)

    def image(self, prev, actions, q_map):
        h, skips, a = self.decoder_inputs(prev, actions, q_map)
        masks = F.pixel_shuffle(self.decoder(h, skips), 2).softmax(dim=1).to(prev.dtype)
        paint = F.pixel_shuffle(self.painter(torch.cat([a, q_map], dim=1)), 2).to(prev.dtype)
        head = self.kernel_head(h).float()
        split = self.ADVECT_KERNELS * self.ADVECT_SIZE**2
        gain, offset = head[:, split:].view(-1, 2, 3, 1, 1).to(prev.dtype).unbind(1)
        copies = torch.cat([prev[:, None], self.moved(prev, actions, head[:, :split])], dim=1)  # (N, 1 + m, 3, H, W)
        copies = copies * (1 + gain[:, None]) + offset[:, None]
        candidates = torch.cat([copies[:, :1], paint[:, None], copies[:, 1:]], dim=1)
        return (masks.unsqueeze(2) * candidates).sum(dim=1)
