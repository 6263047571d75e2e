"""The first cpu-preset Δ-tokenizer design, frozen so that runs trained with it (the earlier bundles) still load.

``decoder="residual_v1"``: the design the current ``residual`` decoder grew from (see
:class:`model.tokenizer.ResidualDeltaTokenizer` for the rationale), i.e. the same U-Net with two
advection kernels predicted from the tokens alone (unscaled logits), no per-action kernel table and no
plain-copy candidate. It only exists so that old checkpoints keep loading exactly as they were trained.
"""
from __future__ import annotations

from model.tokenizer import ResidualDeltaTokenizer


class ResidualDeltaTokenizerV1(ResidualDeltaTokenizer):
    ADVECT_KERNELS = 2
    ACTION_TABLE = False
    PLAIN_COPY = False
