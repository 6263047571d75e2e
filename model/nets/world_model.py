"""The world model G: a causal transformer over per-step token blocks (nanoGPT-style, pre-LN).

Layouts (``S`` = tokens per step, ``K`` = tokens per frame):

* ``delta`` (Δ-IRIS), step t: ``[I(x_t)] [a_t] z_{t+1}^0 .. z_{t+1}^{K-1}`` with
  ``z_{t+1} = tokenizer.encode(x_t, a_t, x_{t+1})``; S = K + 2 (K + 1 with ``i_tokens=False``, the
  paper's ablation). The I-token is a CNN summary of the whole frame x_t (FrameCNN -> linear ->
  LayerNorm; the linear only where the CNN's 8x8 map is not already ``embed_dim`` wide, as in the
  paper preset), trained end to end with the transformer: it is what lets the Δ-tokens describe only
  the *change* while the model still sees where things are. With ``motion_input`` (envs with a scrolling
  view) the action token also carries which way x_t's view will scroll under a_t: a label read off the
  frames in training, the motion head's pick in a dream (``model/nets/motion_head.py``).
* ``iris`` (baseline), step t: ``tok(x_t)^0 .. tok(x_t)^{K-1} [a_t]``; S = K + 1.

Heads (Linear-ReLU-Linear) read the transformer's output at: the action token (reward r_t as
symlog two-hot buckets, end d_t as 2 classes, and the first token of the next block) and at each
token but the last of a block (the following token). So ``token_logits[:, t, k]`` predicts
``tokens[:, t, k]`` for ``delta`` and ``tokens[:, t+1, k]`` for ``iris`` (whose last step has no
target; its k >= 1 logits are zeros).

Generation with a KV cache
--------------------------
``cache = wm.new_cache(B)`` preallocates, per layer, keys and values of shape
``(B, heads, max_len, head_dim)`` with ``max_len = max_steps * S``, plus a buffer of the raw input
embeddings that went in (the "ring" used to re-prime). ``wm.prime(cache, ...)`` loads a context
(lazily: it runs with the next step), and ``wm.generate_step(cache, frame, action)`` appends the
step's head (``[I(x_t)] [a_t]`` for delta, ``[a_t]`` for iris, whose ``tok(x_t)`` is already in the
cache) and samples the K tokens one at a time. The last sampled token is only fed at the next call
(nothing needs its output before then), so a step costs K transformer calls.

Rolling window. Training only ever shows the model windows of at most ``max_steps`` steps that
start at position 0 on a step boundary (learned absolute positions), so a window cannot slide in
place: moving it means recomputing every key and value. When an append would overflow ``max_len``,
the cache is rebuilt from the stored input embeddings with only the newest ``window_keep`` past steps
(default ``max_steps // 2``) plus the current one. The rebuilt cache is exactly what a full forward
over that truncated window computes; the window then grows by one step per step until it is full
again, so a re-prime (one forward over about half a window) happens once every
``max_steps - window_keep`` steps instead of a full-window forward at every step. Context seen by
the model after a step is therefore between ``window_keep + 1`` and ``max_steps`` steps.
``cache.start_step`` counts the steps dropped since ``prime`` (the window's first step, relative to
the primed context), which is what tests compare against. ``window_keep = max_steps - 1`` gives the
slide-by-one policy (a full-window forward per step once full). Deviation: the published code empties
the cache when it is full, losing all context; we keep half of it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F

from model.nets import fastpath
from model.nets.fastpath import Linear, linear
from model.config import IMAGE_SIZE, WorldModelConfig
from model.nets.blocks import FrameCNN
from model.nets.kv_cache import KVCache
from model.nets.motion_head import MotionHead
from model.nets.token_head import TokenHead
from model.nets.twohot import reward_codec

if TYPE_CHECKING:  # a type only: nets import none of the other wings
    from model.data.view_motion import ViewGeometry

LAYOUTS = ("delta", "iris")


@dataclass
class WorldModelOutput:
    token_logits: torch.Tensor  # (B, T, K, V)
    reward_logits: torch.Tensor  # (B, T, R)
    end_logits: torch.Tensor  # (B, T, 2)
    motion_logits: torch.Tensor | None = None  # (B, T, len(MOTIONS)), with a motion input


class CausalSelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        assert dim % heads == 0, "embed_dim must be divisible by num_heads"
        self.heads = heads
        self.qkv = Linear(dim, 3 * dim)
        self.proj = Linear(dim, dim)
        self.dropout = dropout
        self.resid_drop = nn.Dropout(dropout)

    def _heads(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(B, n, D) -> queries, keys and values, each (B, heads, n, D / heads). Views, not einops: batch-1
        generation runs this per token, where einops' parsing cost as much as the attention."""
        b, n, d = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]

    @staticmethod
    def _merge(y: torch.Tensor) -> torch.Tensor:
        """(B, heads, n, E) -> (B, n, heads * E)."""
        b, h, n, e = y.shape
        return y.transpose(1, 2).reshape(b, n, h * e)

    def forward(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor] | None = None,
                start: int = 0) -> torch.Tensor:
        n = x.size(1)
        q, k, v = self._heads(x)
        p = self.dropout if self.training else 0.0
        if kv is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p)
        else:
            kc, vc = kv
            kc[:, :, start:start + n] = k
            vc[:, :, start:start + n] = v
            k, v = kc[:, :, :start + n].to(q.dtype), vc[:, :, :start + n].to(q.dtype)
            # Query i sits at absolute position start + i and sees keys 0..start + i.
            mask = None if n == 1 else torch.ones(n, start + n, dtype=torch.bool, device=x.device).tril(start)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        return self.resid_drop(self.proj(self._merge(y)))

    def alternatives(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor], start: int) -> torch.Tensor:
        """n alternative tokens x (B, n, D) for the one position ``start``: each sees the cached keys before
        it and itself, not the others; the cache is left as it is."""
        n = x.size(1)
        q, k, v = self._heads(x)
        kc, vc = kv
        k = torch.cat([kc[:, :, :start].to(q.dtype), k], dim=2)
        v = torch.cat([vc[:, :, :start].to(q.dtype), v], dim=2)
        mask = torch.cat([torch.ones(n, start, dtype=torch.bool, device=x.device),
                          torch.eye(n, dtype=torch.bool, device=x.device)], dim=1)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(self._merge(y))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, heads, dropout)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(Linear(dim, 4 * dim), nn.GELU(), Linear(4 * dim, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, kv=None, start: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), kv, start)
        return x + self.mlp(self.ln2(x))

    def alternatives(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor], start: int) -> torch.Tensor:
        x = x + self.attn.alternatives(self.ln1(x), kv, start)
        return x + self.mlp(self.ln2(x))


def _mlp_head(dim: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(Linear(dim, hidden), nn.ReLU(), Linear(hidden, out))


def sample_tokens(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """logits (B, V) -> (B,); temperature <= 0 means greedy.

    Gumbel-max (argmax of logits/T plus Gumbel noise, -log of Exp(1) draws) samples exactly
    softmax(logits/T) with no argument validation, so no host/device sync in the generation loop."""
    if temperature <= 0:
        return logits.argmax(-1)
    noise = torch.empty_like(logits, dtype=torch.float32).exponential_().log_()
    return (logits.float() / temperature - noise).argmax(-1)


class WorldModel(nn.Module):
    def __init__(self, cfg: WorldModelConfig, tokens_per_frame: int, vocab_size: int, num_actions: int,
                 layout: str = "delta", digit_levels: tuple[int, ...] | None = None,
                 view: "ViewGeometry | None" = None) -> None:
        """``digit_levels``: the FSQ levels of the tokenizer's code (the ``digits`` token head needs them).
        ``view``: the env's scrolling view (``EnvConfig.scroll_view``), which the motion input needs."""
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; choose one of {LAYOUTS}")
        self.cfg = cfg
        self.layout = layout
        self.tokens_per_frame = K = tokens_per_frame
        self.vocab_size = vocab_size
        self.num_actions = num_actions
        self.i_tokens = layout == "delta" and cfg.i_tokens
        # The motion input reads x_t, so only a world model with I-tokens has it (the ablation stays blind).
        self.motion = self.i_tokens and cfg.motion_input
        if self.motion and view is None:
            raise ValueError("world_model.motion_input needs an env with a scrolling view (crafter)")
        if layout == "delta":
            self.action_index = 1 if self.i_tokens else 0
            self.tokens_per_step = K + 1 + int(self.i_tokens)
        else:
            self.action_index = K
            self.tokens_per_step = K + 1
        self.max_len = cfg.max_steps * self.tokens_per_step
        # Past steps kept when the generation window overflows (see the module docstring).
        self.window_keep = cfg.max_steps // 2
        d = cfg.embed_dim

        self.token_emb = nn.Embedding(vocab_size, d)
        self.action_emb = nn.Embedding(num_actions, d)
        if self.i_tokens:
            self.frame_cnn = FrameCNN(3, cfg.frame_cnn_channels, cfg.frame_latent, IMAGE_SIZE, out_size=8,
                                      unshuffle=cfg.frame_cnn_unshuffle, pool=cfg.frame_cnn_pool)
            flat = self.frame_cnn.out_dim  # paper: 8 x 8 x 8 = 512 = embed_dim, no projection needed
            self.frame_proj = nn.Identity() if flat == d else nn.Linear(flat, d)
            self.frame_norm = nn.LayerNorm(d)
        self.pos_emb = nn.Embedding(self.max_len, d)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(d, cfg.num_heads, cfg.dropout) for _ in range(cfg.num_layers))
        self.ln_f = nn.LayerNorm(d)
        self.head_tokens = TokenHead(d, cfg.head_hidden, vocab_size, cfg.token_head, digit_levels)
        self.reward_codec = reward_codec(cfg.reward_encoding, cfg.num_reward_buckets)
        self.head_reward = _mlp_head(d, cfg.head_hidden, self.reward_codec.num_buckets)
        self.head_end = _mlp_head(d, cfg.head_hidden, 2)
        if self.motion:
            self.motion_head = MotionHead(num_actions, view.classes, view.tile, IMAGE_SIZE)
            self.motion_emb = nn.Embedding(view.classes, d)

        for name, m in self.named_modules():
            if name.startswith(("frame_cnn", "motion_head")):
                continue
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    nn.init.zeros_(m.bias)
        for block in self.blocks:  # GPT-2: scale the residual projections by depth
            for lin in (block.attn.proj, block.mlp[2]):
                nn.init.normal_(lin.weight, std=0.02 / math.sqrt(2 * cfg.num_layers))
        if self.i_tokens and cfg.action_sees_frame:
            # The action token's input is a + i, and i leaves a LayerNorm (unit scale per channel): at the
            # usual std 0.02 the action would be 2% of that sum, and the heads read there (reward, end) could
            # hardly tell the four moves apart. Start the action at the I-token's scale instead.
            nn.init.normal_(self.action_emb.weight, std=1.0)
        if self.motion:  # zero: a warm start from a model without the input begins as that model
            nn.init.zeros_(self.motion_emb.weight)

    # ---------------------------------------------------------------- embeddings

    def embed_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """I-tokens: frames (N, 3, H, W) -> (N, D)."""
        return self.frame_norm(self.frame_proj(self.frame_cnn.features(frames)))

    def _motions(self, frames: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """The motion head's pick for (N, 3, H, W) frames and (N,) actions: the likeliest motion, not a draw
        (whether a move scrolls is a rule of the game, and a draw from a classifier that is 90% sure would break
        that rule one step in ten)."""
        return self.motion_head(frames.float(), actions).argmax(-1)

    def _action_embedding(self, actions: torch.Tensor, motions: torch.Tensor | None) -> torch.Tensor:
        a = self.action_emb(actions)
        return a if motions is None else a + self.motion_emb(motions)

    def _embed_steps(self, frames: torch.Tensor | None, actions: torch.Tensor, tokens: torch.Tensor,
                     motions: torch.Tensor | None = None) -> torch.Tensor:
        """T whole steps -> input embeddings (B, T*S, D) in layout order. With a motion input, ``motions``
        (B, T) are the steps' labels; without them the motion head's likeliest picks stand in."""
        b, t = actions.shape
        if self.motion and motions is None:
            if frames is None:
                raise ValueError("this world model uses I-tokens: frames are required")
            motions = self._motions(frames.flatten(0, 1), actions.flatten()).view(b, t)
        a = self._action_embedding(actions, motions if self.motion else None).unsqueeze(2)  # (B, T, 1, D)
        z = self.token_emb(tokens)  # (B, T, K, D)
        if self.layout == "iris":
            parts = [z, a]
        elif self.i_tokens:
            if frames is None:
                raise ValueError("this world model uses I-tokens: frames are required")
            i = self.embed_frames(frames.reshape(b * t, *frames.shape[2:])).view(b, t, 1, -1)
            parts = [*self._step_head(i, a), z]
        else:
            parts = [a, z]
        return torch.cat(parts, dim=2).flatten(1, 2)

    def _step_head(self, i: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The I-token and action token that open a delta step.

        With ``action_sees_frame`` the action token also carries the I-token. Why: a step's reward and
        end (a coin or an enemy on the agent's next cell) depend on x_t and a_t together; read at the
        action token, they otherwise have to come through attention to the I-token among up to
        ``max_steps`` steps of context. The I-token keeps its own position."""
        return (i, a + i) if self.cfg.action_sees_frame else (i, a)

    # ---------------------------------------------------------------- training

    def _trunk(self, emb: torch.Tensor, cache: KVCache | None = None, start: int = 0) -> torch.Tensor:
        x = self.drop(emb + self.pos_emb.weight[start:start + emb.size(1)])
        for i, block in enumerate(self.blocks):
            x = block(x, None if cache is None else (cache.k[i], cache.v[i]), start)
        return self.ln_f(x)

    def _trunk_token(self, x: torch.Tensor, cache: KVCache, pos: int) -> torch.Tensor:
        """``_trunk`` for one token (B, 1, D) at ``pos`` in inference: the same arithmetic in functional calls.
        Why: a dream step runs the trunk once per token, and at batch 1 the module calls, dropouts and
        head reshapes of the general path cost about a third of it."""
        b, d = x.size(0), x.size(-1)
        heads = self.cfg.num_heads
        x = x + self.pos_emb.weight[pos]
        for block, kc, vc in zip(self.blocks, cache.k, cache.v):
            attn, mlp = block.attn, block.mlp
            h = F.layer_norm(x, (d,), block.ln1.weight, block.ln1.bias, block.ln1.eps)
            qkv = linear(h, attn.qkv).view(b, 3, heads, 1, d // heads)
            kc[:, :, pos:pos + 1] = qkv[:, 1]
            vc[:, :, pos:pos + 1] = qkv[:, 2]
            y = F.scaled_dot_product_attention(qkv[:, 0], kc[:, :, :pos + 1], vc[:, :, :pos + 1])
            x = x + linear(y.reshape(b, 1, d), attn.proj)  # one query: (B, heads, 1, E) is already (B, 1, D)
            h = F.layer_norm(x, (d,), block.ln2.weight, block.ln2.bias, block.ln2.eps)
            x = x + linear(F.gelu(linear(h, mlp[0]), approximate=mlp[1].approximate), mlp[2])
        return F.layer_norm(x, (d,), self.ln_f.weight, self.ln_f.bias, self.ln_f.eps)

    def forward(self, frames: torch.Tensor | None, actions: torch.Tensor, tokens: torch.Tensor,
                motions: torch.Tensor | None = None) -> WorldModelOutput:
        b, t = actions.shape
        if t > self.cfg.max_steps:
            raise ValueError(f"sequence of {t} steps exceeds the window of {self.cfg.max_steps}")
        k = self.tokens_per_frame
        h = self._trunk(self._embed_steps(frames, actions, tokens, motions)).view(b, t, self.tokens_per_step, -1)
        ai = self.action_index
        h_act = h[:, :, ai]
        if self.layout == "delta":
            token_logits = self.head_tokens(h[:, :, ai:ai + k])  # action, z^0 .. z^{K-2}
        else:
            first = self.head_tokens(h_act).unsqueeze(2)  # a_t -> tok(x_{t+1})^0
            rest = self.head_tokens(h[:, 1:, :k - 1])  # tok(x_{t+1})^{<K-1} -> the following token
            rest = torch.cat([rest, rest.new_zeros(b, 1, k - 1, rest.size(-1))], dim=1)
            token_logits = torch.cat([first, rest], dim=2)
        motion_logits = None
        if self.motion:
            motion_logits = self.motion_head(frames.flatten(0, 1).float(), actions.flatten()).view(b, t, -1)
        return WorldModelOutput(token_logits, self.head_reward(h_act), self.head_end(h_act), motion_logits)

    def step_weights(self, frames: torch.Tensor) -> torch.Tensor | None:
        """(B, L+1, 3, H, W) frames -> (B, L) token-loss weights, ``cfg.change_step_weight`` where x_{t+1}
        differs from x_t in at least 5% of its pixels (by more than 0.1 in a channel), else 1; None at weight 1."""
        w = self.cfg.change_step_weight
        if w == 1.0 or self.layout != "delta":
            return None
        changed = ((frames[:, 1:] - frames[:, :-1]).abs().amax(dim=2) > 0.1).float().mean(dim=(2, 3)) >= 0.05
        return 1.0 + (w - 1.0) * changed.float()

    def compute_loss(self, frames: torch.Tensor | None, actions: torch.Tensor, tokens: torch.Tensor,
                     rewards: torch.Tensor, ends: torch.Tensor, mask: torch.Tensor | None = None,
                     step_weights: torch.Tensor | None = None,
                     motions: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Cross-entropies for tokens, rewards and ends (weights ``cfg.*_loss_weight``) over valid steps.

        With autograd on and more than ``cfg.grad_chunk`` sequences, the gradients are computed a
        few sequences at a time (:func:`model.nets.fastpath.loss_in_chunks`): each term is a sum over
        valid targets divided by the whole batch's count, so loss and gradients are those of one pass.
        ``step_weights`` (B, L), from :meth:`step_weights`, scale each step's token cross-entropy (Δ layout).
        ``motions`` (B, L): the motion input's labels (:func:`model.data.view_motion.motion_labels`), required when
        it is on; its classifier's cross-entropy is one more term (``loss_motion``)."""
        if self.motion and motions is None:
            raise ValueError("this world model has a motion input: compute_loss needs its labels (motions=...)")
        mask = torch.ones_like(actions, dtype=torch.bool) if mask is None else mask.bool()
        b = actions.size(0)
        chunk = fastpath.grad_chunk(self.cfg.grad_chunk, self.pos_emb.weight.device, cpu=2, other=0)
        params = [p for p in self.parameters() if p.requires_grad]
        counts = self._target_counts(mask)
        if not (chunk and b > chunk and params and torch.is_grad_enabled()):
            loss, stats = self._loss_terms(frames, actions, tokens, rewards, ends, mask, counts, step_weights, motions)
        else:
            def terms(part: slice):
                f = None if frames is None else frames[part]
                w = None if step_weights is None else step_weights[part]
                m = None if motions is None else motions[part]
                return self._loss_terms(f, actions[part], tokens[part], rewards[part], ends[part], mask[part], counts,
                                        w, m)

            loss, stats = fastpath.loss_in_chunks(params, b, chunk, terms)
            stats = torch.stack(stats).sum(0)
        values = stats.tolist()  # one host sync
        names = ("loss", "loss_tokens", "loss_reward", "loss_end", "token_acc") + (
            ("loss_motion", "motion_acc") if self.motion else ())
        metrics = dict(zip(names, values))
        return loss, metrics

    def _target_counts(self, mask: torch.Tensor) -> torch.Tensor:
        """(token targets, step targets) of a batch: the denominators of the loss means."""
        if self.layout == "delta":
            steps = mask.sum()
            return torch.stack([steps * self.tokens_per_frame, steps]).clamp_min(1)
        pair = mask[:, :-1] & mask[:, 1:]
        return torch.stack([pair.sum() * self.tokens_per_frame, mask.sum()]).clamp_min(1)

    def _loss_terms(self, frames, actions, tokens, rewards, ends, mask, counts, step_weights=None, motions=None):
        """(loss, detached [loss, loss_tokens, loss_reward, loss_end, token_acc] (+ [loss_motion, motion_acc])) with
        sums divided by ``counts`` (the whole batch's), so the terms of parts of a batch add up to the batch's."""
        out = self(frames, actions, tokens, motions)
        if self.layout == "delta":
            logits, targets = out.token_logits[mask], tokens[mask]
        else:
            pair = mask[:, :-1] & mask[:, 1:]
            logits, targets = out.token_logits[:, :-1][pair], tokens[:, 1:][pair]
        logits = logits.flatten(0, 1).float()
        targets = targets.flatten()
        n_tok, n_step = counts[0], counts[1]
        if step_weights is None or self.layout != "delta":
            loss_tokens = F.cross_entropy(logits, targets, reduction="sum") / n_tok
        else:
            w_tok = step_weights[mask].float().repeat_interleave(self.tokens_per_frame)
            loss_tokens = (w_tok * F.cross_entropy(logits, targets, reduction="none")).sum() / n_tok
        reward_logits = out.reward_logits[mask].float()
        r, e = rewards[mask], ends[mask]
        # rare_step_weight: a step with a reward or an end counts this many times in those two losses.
        w = 1.0 + (self.cfg.rare_step_weight - 1.0) * ((r != 0) | e.bool()).float()
        loss_reward = (w * F.cross_entropy(reward_logits, self.reward_codec.encode(r), reduction="none")).sum() / n_step
        loss_end = (w * F.cross_entropy(out.end_logits[mask].float(), e.long(), reduction="none")).sum() / n_step
        c = self.cfg
        loss = c.token_loss_weight * loss_tokens + c.reward_loss_weight * loss_reward + c.end_loss_weight * loss_end
        extra = []
        if self.motion:
            m_logits, m = out.motion_logits[mask].float(), motions[mask]
            loss_motion = F.cross_entropy(m_logits, m, reduction="sum") / n_step
            loss = loss + loss_motion
            extra = [loss_motion.detach(), (m_logits.argmax(-1) == m).float().sum() / n_step]
        with torch.no_grad():
            acc = (logits.argmax(-1) == targets).float().sum() / n_tok
            stats = torch.stack([loss, loss_tokens, loss_reward, loss_end, acc, *extra])
        return loss, stats

    # ---------------------------------------------------------------- generation

    def new_cache(self, batch: int, dtype: torch.dtype | None = None) -> KVCache:
        """An empty cache; ``dtype`` defaults to the autocast dtype when autocast is on."""
        device = self.pos_emb.weight.device
        if dtype is None:
            dtype = (torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type)
                     else self.pos_emb.weight.dtype)
        d, heads = self.cfg.embed_dim, self.cfg.num_heads
        return KVCache(self.cfg.num_layers, batch, heads, self.max_len, d // heads, d, device, dtype)

    def prime(self, cache: KVCache, frames: torch.Tensor | None, actions: torch.Tensor, tokens: torch.Tensor) -> None:
        """Load a context into ``cache`` (replacing what it held); it runs with the next generate_step.

        delta: T whole steps as in ``forward`` (frames (B,T,3,H,W) or None without I-tokens,
               actions (B,T), tokens (B,T,K)); the current frame x_T goes to ``generate_step``.
        iris:  frames ignored, actions (B,T), tokens (B,T+1,K): T whole steps plus the current
               frame's tokens, which the next action follows.
        A context longer than the window keeps its most recent whole steps."""
        cache.clear()
        if self.layout == "delta" and actions.size(1) > self.cfg.max_steps - 1:
            # Cut before embedding: the dropped steps' I-tokens would be computed for nothing.
            cut = actions.size(1) - (self.cfg.max_steps - 1)
            frames = frames[:, cut:] if frames is not None else None
            actions, tokens = actions[:, cut:], tokens[:, cut:]
            cache.start_step = cut
        if self.layout == "delta":
            emb = self._embed_steps(frames, actions, tokens) if actions.size(1) > 0 else None
        else:
            assert tokens.size(1) == actions.size(1) + 1, "iris prime needs the current frame's tokens"
            last = self.token_emb(tokens[:, -1])
            emb = last if actions.size(1) == 0 else torch.cat(
                [self._embed_steps(None, actions, tokens[:, :-1]), last], dim=1)
        cache.pending = emb

    def window_steps(self, cache: KVCache) -> int:
        """Steps in the cache's window after a ``generate_step``, the current one included (IRIS also
        counts the frame being generated): a full forward over that many last steps is the reference."""
        n = cache.length + (0 if cache.pending is None else cache.pending.size(1))
        return math.ceil(n / self.tokens_per_step)

    def _append(self, cache: KVCache, emb: torch.Tensor, reserve: int = 0) -> torch.Tensor:
        """Feed ``emb`` (B, n, D) through the cached transformer; returns its outputs (B, n, D).
        ``reserve`` more tokens will follow in this step: room is made for them now, so that a
        flush never happens in the middle of a block."""
        n_new, start = emb.size(1), cache.length
        need = start + n_new + reserve
        if need > self.max_len:  # flush: re-prime from the newest whole steps (module docstring)
            s = self.tokens_per_step
            # A primed context that does not fit keeps all it can; a full window keeps window_keep steps.
            free = 0 if start == 0 else max(0, self.cfg.max_steps - 1 - self.window_keep) * s
            drop = math.ceil((need - self.max_len + free) / s) * s
            emb = torch.cat([cache.emb[:, :start].to(emb.dtype), emb], dim=1)[:, drop:]
            cache.start_step += drop // s
            start = 0
        n = emb.size(1)
        cache.emb[:, start:start + n] = emb
        lean = (n == 1 and fastpath.enabled() and not self.training and not torch.is_grad_enabled()
                and not torch.is_autocast_enabled(emb.device.type) and cache.k[0].dtype == emb.dtype)
        h = self._trunk_token(emb, cache, start) if lean else self._trunk(emb, cache, start)
        cache.length = start + n
        return h[:, -min(n_new, n):]

    def settle(self, cache: KVCache) -> None:
        """Run the cache's pending inputs (a primed context, the last sampled token) now: a cache about to
        be copied for branches then holds its context once instead of once per branch."""
        if cache.pending is not None:
            pending, cache.pending = cache.pending, None
            self._append(cache, pending.float())

    def _score_actions(self, cache: KVCache, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Action-token embeddings (B, A, D), one per action, in the place of the action token just appended
        (the cache's last position) -> (reward (B, A), end probability (B, A)). The step's reward and end are
        read at the action token, so scoring every action costs one token each; the cache is not changed."""
        pos = cache.length - 1
        x = emb.float() + self.pos_emb.weight[pos]
        for i, block in enumerate(self.blocks):
            x = block.alternatives(x, (cache.k[i], cache.v[i]), pos)
        x = self.ln_f(x)
        b, a = x.shape[:2]
        reward = self.reward_codec.decode(self.head_reward(x).flatten(0, 1)).view(b, a)
        end_prob = F.softmax(self.head_end(x).float(), dim=-1)[..., 1]
        return reward.float(), end_prob

    def adapt_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A warm start's weights made to fit this model (a flat token head into a digit head; a model without
        the motion input gets this one's fresh motion head and zero motion embedding, so it starts as it was)."""
        state = self.head_tokens.adapt_state_dict(state, "head_tokens.")
        if self.motion and not any(k.startswith("motion_") for k in state):
            state = dict(state)
            state.update({k: v for k, v in self.state_dict().items() if k.startswith(("motion_head.", "motion_emb."))})
        return state

    def generate_step(self, cache: KVCache, frame: torch.Tensor | None, action: torch.Tensor,
                      temperature: float = 1.0,
                      tokens: torch.Tensor | None = None,
                      score_actions: bool = False,
                      motions: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One env step in imagination: frame x_t (B,3,H,W) (delta with I-tokens; else ignored) and
        action a_t (B,) -> (tokens (B,K), reward r_t (B,), end probability (B,)).

        ``tokens`` (B,K) teacher-forces the tokens instead of sampling them (evaluation, tests). The
        step's logits are left in ``cache.last`` (shaped like ``forward``'s output with T=1). With
        ``score_actions``, ``cache.outcomes`` gets the reward and end probability (B, A) of every action
        from x_t (:meth:`_score_actions`). With a motion input, the step's motion is the motion head's pick (or
        ``motions`` (B,)), left in ``cache.motion``."""
        parts = [] if cache.pending is None else [cache.pending]
        i = None
        if self.i_tokens:
            if frame is None:
                raise ValueError("this world model uses I-tokens: generate_step needs the current frame")
            i = self.embed_frames(frame).unsqueeze(1)
            if self.motion:
                cache.motion = self._motions(frame, action) if motions is None else motions
            a = self._action_embedding(action, cache.motion if self.motion else None)
            parts.extend(self._step_head(i, a.unsqueeze(1)))
        else:
            parts.append(self.action_emb(action).unsqueeze(1))
        cache.pending = None
        h = self._append(cache, torch.cat([p.float() for p in parts], dim=1),
                         reserve=self.tokens_per_frame - 1)[:, -1]
        if score_actions:
            every = self.action_emb.weight.unsqueeze(0).expand(h.size(0), -1, -1)
            if self.motion:  # each action with the motion it most likely makes from x_t (one pass of the head)
                every = every + self.motion_emb(self.motion_head.rows(frame.float()).argmax(-1))
            cache.outcomes = self._score_actions(cache, every if i is None else self._step_head(i, every)[1])
        reward_logits, end_logits = self.head_reward(h), self.head_end(h)
        all_logits, sampled = [], []
        for k in range(self.tokens_per_frame):
            if k > 0:
                h = self._append(cache, self.token_emb(sampled[-1]).unsqueeze(1))[:, -1]
            logits = self.head_tokens(h)
            all_logits.append(logits)
            sampled.append(tokens[:, k] if tokens is not None else sample_tokens(logits, temperature))
        cache.pending = self.token_emb(sampled[-1]).unsqueeze(1)
        cache.last = WorldModelOutput(torch.stack(all_logits, 1).unsqueeze(1), reward_logits.unsqueeze(1),
                                      end_logits.unsqueeze(1))
        reward = self.reward_codec.decode(reward_logits)
        end_prob = F.softmax(end_logits.float(), dim=-1)[:, 1]
        return torch.stack(sampled, dim=1), reward, end_prob
