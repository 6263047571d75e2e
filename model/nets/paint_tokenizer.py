"""A Δ-tokenizer whose decoder never reads x_{t-1}, it only moves it (``decoder="paint"``).

The residual decoder draws a change as x_{t-1} + delta, with a U-Net that reads x_{t-1}; its tokens are therefore
relative to the exact previous frame. Decoded on a dream's own frames, even the real tokens of a walk turn the
terrain that scrolls into view into smears within a few moves, and a world model has to learn a code whose meaning
changes with every context.

Here the decoder sees the tokens and the action only. From them it draws a *paint* image, per-pixel masks and the
advection kernels; the frame is the masks' mix of x_{t-1}, x_{t-1} moved by the kernels (both with a global colour
gain and offset, for Crafter's slow day-night light) and the paint. x_{t-1} is material, never an input to a
decision: a token means the same on any previous frame, and an error in x_{t-1} is carried along, not amplified.
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
        dec_in = c.latent_dim + c.action_emb_dim
        del self.frame_cnn, self.prev_action  # nothing reads x_{t-1} to decide
        # per 32x32 position, pixel-shuffled to 64x64: paint RGB, then mask logits for [x_{t-1}, paint, m moved copies]
        self.decoder = Decoder(dec_in, c.channels, mult, down, (3 + 2 + m) * 4, c.num_res_blocks)
        self.kernel_head = nn.Sequential(nn.Conv2d(dec_in, 64, 3, padding=1), nn.SiLU(), nn.AdaptiveAvgPool2d(1),
                                         nn.Flatten(), nn.Linear(64, 64), nn.SiLU(), nn.Linear(64, m * k * k + COLOUR))
        for module in (self.decoder, self.kernel_head):
            module.apply(init_weights)
        last = self.decoder.out[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        last.bias.data[3 * 4:4 * 4] = 5.0  # the mask starts on x_{t-1}: training starts from the copy baseline
        nn.init.zeros_(self.kernel_head[-1].weight)
        nn.init.zeros_(self.kernel_head[-1].bias)

    def image(self, prev, actions, q_map):
        r = self.latent_res
        a = self.decoder_action(actions).view(-1, self.cfg.action_emb_dim, r, r).to(q_map.dtype)
        h = torch.cat([a, q_map], dim=1)
        out = F.pixel_shuffle(self.decoder(h), 2).to(prev.dtype)
        paint, masks = out[:, :3], out[:, 3:].softmax(dim=1)
        head = self.kernel_head(h).float()
        split = self.ADVECT_KERNELS * self.ADVECT_SIZE**2
        gain, offset = head[:, split:].view(-1, 2, 3, 1, 1).to(prev.dtype).unbind(1)
        copies = torch.cat([prev[:, None], self.moved(prev, actions, head[:, :split])], dim=1)  # (N, 1 + m, 3, H, W)
        copies = copies * (1 + gain[:, None]) + offset[:, None]
        candidates = torch.cat([copies[:, :1], paint[:, None], copies[:, 1:]], dim=1)
        return (masks.unsqueeze(2) * candidates).sum(dim=1)
