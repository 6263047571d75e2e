"""Configuration dataclasses and named presets.

One dataclass per concern (tokenizer, world model, actor-critic, training, env), gathered in
:class:`Config`. The defaults are the published Crafter configuration of Δ-IRIS (Micheli et al.,
ICML 2024); the presets are short diffs against it:

* ``paper`` - the defaults as they are.
* ``cpu``   - trains a useful model on a 2-core laptop in hours (``CPU``).
* ``tiny``  - for tests: every network a few thousand parameters, every schedule a handful of steps.

``ENV_ADJUSTMENTS`` holds a preset's changes for one env (GridWorld on ``cpu``). Why each deviation
from the published setup was made is written down in docs/decisions.md.

Everything is plain data (ints, floats, strings, tuples) so that a config round-trips through
JSON and travels inside checkpoints; ``Config.from_dict(cfg.to_dict()) == cfg``, and
``from_dict`` also reads the configs of older checkpoints (``LEGACY_FIELDS``).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

PRESETS = ("tiny", "cpu", "paper")

IMAGE_SIZE = 64  # frames are 64x64 RGB: every env renders at this size and every network expects it

@dataclass
class EnvConfig:
    name: str = "crafter"  # "crafter" | "gridworld" | "atari:<Game>"
    max_episode_steps: int = 10000

    @property
    def num_actions(self) -> int:
        """The env's action count: Crafter 17, GridWorld 5, an Atari game its minimal set (needs ale-py)."""
        from model.data.envs import num_actions

        return num_actions(self.name)

    @property
    def scroll_view(self):
        """The env's scrolling view (``model.data.view_motion.ViewGeometry``), None for an env without one."""
        from model.data.view_motion import VIEWS

        return VIEWS.get(self.name)


@dataclass
class TokenizerConfig:
    kind: str = "delta"  # "delta" (Δ-tokenizer) | "iris" (frame-only baseline)
    # "paper": the decoder sees x_{t-1} only through an 8x8 CNN summary; "residual": it also gets x_{t-1}
    # at full resolution and predicts a change of it (model/nets/tokenizer.py)
    decoder: str = "paper"
    channels: int = 64  # base width of the conv encoder/decoder
    mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    down: tuple[int, ...] = (1, 0, 1, 1, 0)  # 1 = downsample x2 after that level
    num_res_blocks: int = 1  # per level
    # More ResBlocks at the end of each Δ-decoder level than the encoder has: room to draw what scrolls into view.
    # `experiments.decoder_tuning.cli --grow N` adds them to a trained decoder as identity blocks
    decoder_extra_blocks: int = 0
    latent_dim: int = 64  # channels of the 8x8 latent
    tokens_per_frame: int = 4  # K (Δ: a sqrt(K) x sqrt(K) grid of patches; IRIS: 16 or 64)
    vocab_size: int = 1024
    code_dim: int = 64
    commitment: float = 0.02
    ema_decay: float = 0.99
    usage_decay: float = 0.98
    # When dead codes are replaced by current inputs: "collapsed" (usage entropy below 1 bit),
    # "low_entropy" (below log2(vocab_size) - 2 bits), "always" or "off" (model/nets/quantizer.py)
    revival: str = "collapsed"
    quantizer: str = "vq"  # "vq": cosine VQ with an EMA codebook | "fsq": finite scalar quantization
    fsq_levels: tuple[int, ...] = (4, 4, 4, 4, 4)  # fsq: prod(fsq_levels) must equal vocab_size
    # Loss weight of the pixels a scroll brings into view (the new strip; envs with a scrolling view, Crafter),
    # against 1 for the rest: the strip is 8% of a Crafter frame, and at weight 1 the tokenizer draws it far
    # blurrier than the rest of the view. 1 = the published loss.
    strip_weight: float = 1.0
    frame_cnn_channels: int = 64  # width of the decoder's CNN over x_{t-1}
    frame_latent: int = 8  # channels of that CNN's 8x8 output
    action_emb_dim: int = 4  # channels of the decoder's action embedding at 8x8
    l1_weight: float = 0.1
    l2_weight: float = 1.0
    max_pixel_weight: float = 0.01
    # Pairs per chunk when computing a training batch's gradients (memory and CPU speed; see
    # Tokenizer.compute_loss): -1 = auto (16 on CPU, 128 on GPU), 0 = the whole batch at once.
    grad_chunk: int = -1


@dataclass
class WorldModelConfig:
    num_layers: int = 3
    num_heads: int = 8
    embed_dim: int = 512
    max_steps: int = 21  # context window in env steps
    dropout: float = 0.0
    i_tokens: bool = True  # False = the paper's ablation
    frame_cnn_channels: int = 32  # I-token CNN
    frame_latent: int = 8  # 8x8x8 = 512
    frame_cnn_unshuffle: bool = False  # the I-token CNN starts with a 2x2 pixel-unshuffle
    frame_cnn_pool: bool = False  # the I-token also reads the CNN map's max per channel (FrameCNN)
    action_sees_frame: bool = False  # the action token's input is the action embedding plus the I-token
    # A classifier reads x_t and a_t, says which way the view will scroll, and its answer is added to the action
    # token (model/nets/motion_head.py). Envs with a scrolling view only (crafter); I-token models only.
    motion_input: bool = False
    num_reward_buckets: int = 255
    reward_encoding: str = "twohot"  # "twohot" (symlog buckets) | "sign" (3 classes; model/nets/twohot.py)
    token_loss_weight: float = 1.0
    reward_loss_weight: float = 1.0
    end_loss_weight: float = 1.0
    rare_step_weight: float = 1.0  # weight of a step with a reward or an end in the reward and end losses
    change_step_weight: float = 1.0  # weight of the Δ-tokens of a step whose frame changed (>= 5% of pixels)
    head_hidden: int = 512
    # "flat": one vocabulary-wide softmax per token (published). "digits" (FSQ tokenizers): each of a token's
    # FSQ digits gets its own softmax and the token's log-probability is the sum of its digits', so codes that
    # share digits share what the head learnt.
    token_head: str = "flat"
    # Sequences per chunk of a training batch's gradients (see WorldModel.compute_loss):
    # -1 = auto (2 on CPU, whole batch on GPU), 0 = the whole batch at once.
    grad_chunk: int = -1


@dataclass
class ActorCriticConfig:
    cnn_channels: int = 32
    cnn_latent: int = 16  # 8x8x16 = 1024
    cnn_unshuffle: bool = False  # the CNN starts with a 2x2 pixel-unshuffle
    cnn_pool: bool = False  # the LSTM also reads the CNN map's max per channel (FrameCNN)
    cnn_keypoints: bool = False  # ... and its soft-argmax position per channel (FrameCNN)
    lstm_dim: int = 512
    num_value_buckets: int = 255
    burn_in: int = 5
    horizon: int = 15
    gamma: float = 0.997
    lambda_: float = 0.95
    entropy_weight: float = 1e-3
    normalize_advantages: bool = False  # centre the advantages per imagined step, scale to unit RMS
    target_tau: float = 0.995
    temperature: float = 1.0
    # Weight of the one-step lookahead term: the exact gradient of E_pi[r + gamma (1 - p) V(s)] over every
    # action, each scored by the world model (ActorCritic._lookahead_loss); 0 = off
    lookahead_weight: float = 0.0
    lookahead_temperature: float = 0.05  # entropy weight of that term: its optimum is softmax(Q / T)
    reinforce_weight: float = 1.0  # weight of the REINFORCE term


@dataclass
class TrainConfig:
    lr: float = 1e-4
    weight_decay: float = 0.01
    grad_clip: float = 10.0
    tokenizer_batch: int = 32  # sequences
    tokenizer_seq: int = 21  # steps per sequence (seq - 1 pairs)
    # Share of tokenizer segments trained in a closed loop: each pair's previous frame is the tokenizer's own
    # reconstruction of it, chained from the segment's first real frame (what a dream's decoder starts from),
    # not the real one. 0 = the published training on real pairs only.
    tokenizer_closed_loop: float = 0.0
    # What those closed-loop pairs encode from: "decoded" (the encoder sees the reconstruction too, so its tokens
    # correct the drift) or "real" (the real pair's tokens, decoded from the reconstruction: what a dream's
    # decoder gets from a world model trained on real pairs, so the decoder learns to stay sharp on its own drift).
    tokenizer_closed_loop_tokens: str = "decoded"
    # Share of tokenizer pairs decoded from another pair's tokens (drawn from the same batch, no gradient to the
    # encoder through them): the decoder meets codes that do not fit the pair, as it does from a world model that
    # is unsure, and learns what x_{t-1} and the action tell on their own (a move, a wall). 0 = published.
    tokenizer_token_swap: float = 0.0
    # Decay of an exponential moving average of the tokenizers' and world models' weights, which they take at the
    # end of each phase (model/train/averaging.py): with small batches at a constant lr the last iterate is a
    # noisy draw, its average a steadier model. 0 = off (the published last iterate).
    weight_average: float = 0.0
    # Share of world-model segments whose I-tokens read the tokenizer's closed-loop frames (the real tokens decoded
    # from its own previous output, chained from the segment's first real frame) instead of the real ones: a dream
    # feeds the world model the decoder's frames, drift included. 0 = the published training on real frames.
    world_model_closed_loop: float = 0.0
    world_model_batch: int = 32
    world_model_seq: int = 21
    actor_critic_batch: int = 86
    steps_per_epoch: int = 500  # per component
    first_epoch_tokenizer_steps: int = 5000
    first_epoch_world_model_steps: int = 2500
    first_epoch_actor_critic_steps: int = 500
    initial_random_frames: int = 100_000
    # Probability that the first collection's random policy repeats an env's previous action
    # (0 = i.i.d. uniform; RandomPolicy's ``repeat``)
    random_repeat: float = 0.0
    # Share of those fresh random actions drawn from the moves (the arrow keys' actions) instead of all of them:
    # a walker, whose every step scrolls new terrain into view (Crafter: 4 of 17 actions move). 0 = uniform.
    random_moves: float = 0.0
    frames_per_epoch: int = 10_000
    num_envs: int = 16
    epsilon: float = 0.01
    recency_exponent: float = 5.0
    eval_every: int = 50  # epochs
    test_episodes: int = 64
    total_frames: int = 10_000_000
    snapshot_every: int = 10  # epochs
    # Also write checkpoints/last every this many optimiser steps inside a phase (0 = only at epoch ends), so a
    # killed run loses at most that much training; its resume redoes the epoch from those weights.
    checkpoint_every: int = 0
    # "auto" (bf16 on CUDA and on CPUs with bf16 hardware: AMX or AVX512-BF16) | "bf16" | "off": the tokenizer's
    # and world model's training steps; dreams and imagination use it for their conv nets only
    # (model.device.image_autocast)
    autocast: str = "auto"
    # Also train the comparison models on the same batches: a world model without I-tokens
    # (the paper's ablation) and an IRIS-style tokenizer with iris_tokens tokens per frame.
    baselines: bool = False
    iris_tokens: int = 16
    # The IRIS-style tokenizer's FSQ levels; empty = the Δ-tokenizer's (its code then changes with the Δ code's).
    iris_fsq_levels: tuple[int, ...] = ()
    # Warm start: model name -> checkpoint folder ("folder" or "folder:stored_name") whose weights the
    # model starts from instead of a random init (e.g. tokenizers from `deltaplay eval tokenizers`). Kept
    # in the config, so every checkpoint of the run says where its weights began.
    init: dict[str, str] = field(default_factory=dict)


@dataclass
class Config:
    preset: str = "paper"
    seed: int = 0
    device: str = "auto"
    env: EnvConfig = field(default_factory=EnvConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    world_model: WorldModelConfig = field(default_factory=WorldModelConfig)
    actor_critic: ActorCriticConfig = field(default_factory=ActorCriticConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        """The config a dict describes; fields of older checkpoints are mapped (``LEGACY_FIELDS``)."""
        kw: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in d:
                continue
            sub = _SECTIONS.get(f.name)
            kw[f.name] = _build(sub, _upgrade(f.name, d[f.name])) if sub else d[f.name]
        return cls(**kw)

    def override(self, key: str, value: str) -> "Config":
        """Apply ``section.field=value`` (the CLI's ``--set``); the value is parsed as JSON
        when it can be, else kept as a string. Unknown keys raise ``KeyError`` naming them."""
        d = self.to_dict()
        node = d
        parts = key.split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise KeyError(f"unknown config section {p!r} in {key!r}")
            node = node[p]
        if parts[-1] not in node:
            raise KeyError(f"unknown config field {key!r}")
        try:
            parsed = json.loads(value)
        except (json.JSONDecodeError, TypeError):
            parsed = value
        node[parts[-1]] = parsed
        return Config.from_dict(d)


_SECTIONS = {
    "env": EnvConfig,
    "tokenizer": TokenizerConfig,
    "world_model": WorldModelConfig,
    "actor_critic": ActorCriticConfig,
    "train": TrainConfig,
}

# Fields that configs saved by earlier versions carry and this one derives or fixes:
# env.num_actions (a function of the env's name), env.image_size and tokenizer.image_size (always
# IMAGE_SIZE), train.num_workers (never read). tokenizer.revive_dead_codes=false is revival="off".
LEGACY_FIELDS = {
    "env": ("num_actions", "image_size"),
    "tokenizer": ("image_size", "revive_dead_codes"),
    "train": ("num_workers",),
}


def _upgrade(section: str, d: dict[str, Any]) -> dict[str, Any]:
    """A section's dict without its legacy fields, with what they meant moved to the current ones."""
    out = {k: v for k, v in d.items() if k not in LEGACY_FIELDS.get(section, ())}
    if section == "tokenizer" and "revive_dead_codes" in d:
        # Configs that had the switch always had revival too (default "low_entropy" then).
        out["revival"] = d.get("revival", "low_entropy") if d["revive_dead_codes"] else "off"
    return out


def _build(cls: type, d: dict[str, Any]) -> Any:
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(d) - set(names)
    if unknown:
        raise KeyError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
    return cls(**kw)


Diff = dict[str, dict[str, Any]]  # section -> {field: value}

CPU: Diff = {
    "tokenizer": dict(decoder="residual", channels=32, frame_cnn_channels=16, quantizer="fsq"),
    "world_model": dict(num_heads=4, embed_dim=256, head_hidden=256, frame_cnn_channels=16),
    "actor_critic": dict(cnn_channels=16, lstm_dim=256),
    "train": dict(lr=3e-4, tokenizer_batch=16, tokenizer_seq=3, world_model_batch=8, actor_critic_batch=16,
                  steps_per_epoch=60, first_epoch_tokenizer_steps=150, first_epoch_world_model_steps=120,
                  first_epoch_actor_critic_steps=30, initial_random_frames=10_000, frames_per_epoch=2_000,
                  num_envs=2, eval_every=1, test_episodes=8, total_frames=200_000, snapshot_every=5),
}

TINY: Diff = {
    "env": dict(max_episode_steps=200),
    "tokenizer": dict(channels=8, mult=(1, 1, 2), down=(1, 1, 1), latent_dim=16, vocab_size=64, code_dim=16,
                      frame_cnn_channels=8, frame_latent=4),
    "world_model": dict(num_layers=1, num_heads=2, embed_dim=32, max_steps=6, frame_cnn_channels=8,
                        frame_latent=2, num_reward_buckets=33, head_hidden=32),
    "actor_critic": dict(cnn_channels=8, cnn_latent=2, lstm_dim=32, num_value_buckets=33, burn_in=2, horizon=4),
    "train": dict(lr=1e-3, tokenizer_batch=4, tokenizer_seq=3, world_model_batch=4, world_model_seq=6,
                  actor_critic_batch=4, steps_per_epoch=3, first_epoch_tokenizer_steps=5,
                  first_epoch_world_model_steps=5, first_epoch_actor_critic_steps=3, initial_random_frames=300,
                  frames_per_epoch=100, num_envs=2, eval_every=1, test_episodes=2, total_frames=600,
                  snapshot_every=1),
}

GRIDWORLD_CPU: Diff = {
    "world_model": dict(frame_cnn_unshuffle=True, frame_cnn_pool=True, action_sees_frame=True,
                        reward_encoding="sign", token_loss_weight=0.1, end_loss_weight=0.1, rare_step_weight=10.0),
    "actor_critic": dict(cnn_unshuffle=True, cnn_pool=True, cnn_keypoints=True, cnn_channels=8, burn_in=2,
                         horizon=5, lookahead_weight=1000.0, reinforce_weight=0.0),
    "train": dict(actor_critic_batch=48, first_epoch_world_model_steps=1200, first_epoch_actor_critic_steps=200),
}

ENV_ADJUSTMENTS: dict[tuple[str, str], Diff] = {("cpu", "gridworld"): GRIDWORLD_CPU}


def apply_diff(cfg: Config, diff: Diff) -> Config:
    """``cfg`` with each section's fields in ``diff`` replaced (in place; returns it)."""
    for section, changes in diff.items():
        setattr(cfg, section, dataclasses.replace(getattr(cfg, section), **changes))
    return cfg


def paper() -> Config:
    """The published Crafter configuration."""
    return Config(preset="paper")


def cpu() -> Config:
    """The 2-core-laptop preset: narrower networks, a residual tokenizer with FSQ tokens, a short schedule."""
    return apply_diff(Config(preset="cpu"), CPU)


def tiny() -> Config:
    """For tests: every network a few thousand parameters, every schedule a handful of steps."""
    return apply_diff(Config(preset="tiny"), TINY)


def get_preset(name: str, env: str | None = None) -> Config:
    """A named preset, for ``env`` when given (with that env's adjustments, see ``ENV_ADJUSTMENTS``)."""
    try:
        cfg = {"tiny": tiny, "cpu": cpu, "paper": paper}[name]()
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
    if env is not None:
        cfg.env.name = env
        apply_diff(cfg, ENV_ADJUSTMENTS.get((name, env.lower()), {}))
    return cfg
