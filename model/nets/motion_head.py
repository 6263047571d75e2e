"""The world model's motion input: which way will the view scroll when action a_t is taken in frame x_t?

Why: in Crafter a move key scrolls the whole view by one tile unless the tile it leads to is a wall (tree,
water, stone, table, a cow). The rule is local and easy to read from pixels, yet a transformer that must learn it
through the Δ-tokens' cross-entropy learns it slowly (the model card, sessions 25-26). So a small classifier reads the frame and the action and
says which of the view's motions (:data:`model.data.view_motion.MOTIONS`) will happen; its answer is embedded and added to the action
token, and the Δ-tokens only have to follow it. Trained on labels read off the data's frame pairs
(:func:`model.data.view_motion.motion_labels`); in a dream the classifier's own draw takes their place.

The first layer is a convolution with the tile as kernel and stride, so each output cell sees one tile.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class MotionHead(nn.Module):
    """Tiles -> hidden features -> one row of motion logits per action, the action's row picked. Why a row per
    action rather than the action as one more input: which way a key scrolls is then a bias of its row, learnt in
    tens of steps, and the wall is that row's reading of the hidden features; fed the action as an input, the
    net took hundreds of steps to learn that a move key moves at all.

    ``lr_scale``: its optimiser groups run at this multiple of the world model's learning rate
    (``model.train.phases.make_optimizer``): it is a separate classifier (no gradient crosses to the
    transformer), and at the transformer's rate it needed about twice the steps to learn the walls."""

    lr_scale = 3.0

    def __init__(self, num_actions: int, num_motions: int, tile: int, image_size: int, channels: int = 32,
                 hidden: int = 256) -> None:
        super().__init__()
        self.tiles = nn.Conv2d(3, channels, kernel_size=tile, stride=tile)
        cells = (image_size - tile) // tile + 1
        self.mlp = nn.Sequential(nn.Linear(channels * cells * cells, hidden), nn.ReLU(),
                                 nn.Linear(hidden, num_actions * num_motions))
        self.num_motions = num_motions

    def rows(self, frames: torch.Tensor) -> torch.Tensor:
        """frames (N, 3, H, W) in [0, 1] -> logits (N, num_actions, num_motions): every action's row at once."""
        return self.mlp(F.relu(self.tiles(frames)).flatten(1)).view(frames.size(0), -1, self.num_motions)

    def forward(self, frames: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """frames (N, 3, H, W) in [0, 1], actions (N,) -> logits (N, num_motions)."""
        rows = self.rows(frames)
        return rows.gather(1, actions.long().view(-1, 1, 1).expand(-1, 1, self.num_motions))[:, 0]
