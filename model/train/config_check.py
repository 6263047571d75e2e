"""The checks a config passes before it trains, and which models a run trains."""
from __future__ import annotations

import math

from model.config import PRESETS, Config, TokenizerConfig
from model.device import resolve_device
from model.nets.twohot import REWARD_ENCODINGS

MODEL_SECTIONS = ("env", "tokenizer", "world_model", "actor_critic")


class ConfigError(ValueError):
    """A config that cannot train (bad env, impossible sizes); the message says what to change."""


def prepare_config(cfg: Config) -> Config:
    """A checked copy of ``cfg`` with the env's facts filled in. Raises :class:`ConfigError`.

    One convenience: an IRIS tokenizer left at the Δ default of 4 tokens per frame gets
    ``train.iris_tokens`` (16), the paper's baseline; set ``tokenizer.tokens_per_frame`` otherwise."""
    cfg = Config.from_dict(cfg.to_dict())
    from model.data.envs import canonical_name, num_actions

    p: list[str] = []
    if cfg.preset not in PRESETS:
        p.append(f"unknown preset {cfg.preset!r}; choose one of {', '.join(PRESETS)}")
    try:
        cfg.env.name = canonical_name(cfg.env.name)
        num_actions(cfg.env.name)  # an unknown Atari game or a missing ale-py fails here
    except ValueError as e:
        raise ConfigError(str(e)) from None
    except ImportError as e:
        raise ConfigError(f"env {cfg.env.name!r}: {e}") from None
    t, w, a, tr = cfg.tokenizer, cfg.world_model, cfg.actor_critic, cfg.train
    if t.kind not in ("delta", "iris"):
        p.append(f"tokenizer.kind must be delta or iris, got {t.kind!r}")
    if t.kind == "iris" and t.tokens_per_frame == TokenizerConfig().tokens_per_frame:
        t.tokens_per_frame = tr.iris_tokens
    if t.decoder_extra_blocks < 0:
        p.append(f"tokenizer.decoder_extra_blocks must be 0 or more, got {t.decoder_extra_blocks}")
    for name, k in (("tokenizer.tokens_per_frame", t.tokens_per_frame), ("train.iris_tokens", tr.iris_tokens)):
        if k < 1 or math.isqrt(k) ** 2 != k:
            p.append(f"{name} must be a square number (tokens form a grid), got {k}")
    if w.embed_dim % w.num_heads:
        p.append(f"world_model.embed_dim ({w.embed_dim}) must be divisible by num_heads ({w.num_heads})")
    if w.reward_encoding not in REWARD_ENCODINGS:
        p.append(f"world_model.reward_encoding must be one of {', '.join(REWARD_ENCODINGS)}, got {w.reward_encoding!r}")
    if not 2 <= tr.world_model_seq <= w.max_steps:
        p.append(f"train.world_model_seq ({tr.world_model_seq}) must be in 2..world_model.max_steps ({w.max_steps})")
    shares = {"tokenizer_closed_loop": "segments", "world_model_closed_loop": "segments",
              "tokenizer_token_swap": "pairs", "random_moves": "random actions"}
    for f, of in shares.items():
        if not 0.0 <= getattr(tr, f) <= 1.0:
            p.append(f"train.{f} is a share of {of}, 0..1, got {getattr(tr, f)}")
    if tr.tokenizer_closed_loop_tokens not in ("decoded", "real"):
        p.append(f"train.tokenizer_closed_loop_tokens must be decoded or real, got {tr.tokenizer_closed_loop_tokens!r}")
    if not 0.0 <= tr.weight_average < 1.0:
        p.append(f"train.weight_average is an EMA decay, 0 (off) up to below 1, got {tr.weight_average}")
    if tr.tokenizer_seq < 2:
        p.append(f"train.tokenizer_seq must be >= 2 (pairs of frames), got {tr.tokenizer_seq}")
    if a.burn_in < 1 or a.horizon < 1:
        p.append("actor_critic.burn_in and actor_critic.horizon must be >= 1")
    positive = ("tokenizer_batch", "world_model_batch", "actor_critic_batch", "initial_random_frames",
                "frames_per_epoch", "num_envs", "eval_every", "snapshot_every", "total_frames")
    for f in positive:
        if getattr(tr, f) < 1:
            p.append(f"train.{f} must be >= 1, got {getattr(tr, f)}")
    for f in ("steps_per_epoch", "first_epoch_tokenizer_steps", "first_epoch_world_model_steps",
              "first_epoch_actor_critic_steps", "test_episodes"):
        if getattr(tr, f) < 0:
            p.append(f"train.{f} must be >= 0, got {getattr(tr, f)}")
    if not tr.lr > 0 or tr.weight_decay < 0 or not tr.grad_clip > 0:
        p.append("train.lr and train.grad_clip must be > 0 and train.weight_decay >= 0")
    if not 0 <= tr.epsilon <= 1:
        p.append(f"train.epsilon must be in [0, 1], got {tr.epsilon}")
    try:
        resolve_device(cfg.device)
    except (ValueError, RuntimeError) as e:
        p.append(str(e))
    if tr.autocast not in ("auto", "bf16", "off"):
        p.append(f"train.autocast must be auto, bf16 or off, got {tr.autocast!r}")
    if tr.baselines and (t.kind != "delta" or not w.i_tokens):
        p.append("train.baselines trains the no-I-token and IRIS comparisons beside a Δ model with "
                 "I-tokens: use it with --tokenizer delta and without --no-i-tokens")
    if tr.iris_fsq_levels and min(tr.iris_fsq_levels) < 2:
        p.append(f"train.iris_fsq_levels must all be >= 2, got {tr.iris_fsq_levels}")
    if t.strip_weight != 1.0 and (cfg.env.scroll_view is None or t.kind != "delta"):
        p.append(f"tokenizer.strip_weight weighs the strip a scroll brings into view: it needs a Δ tokenizer and an "
                 f"env with a scrolling view, not {cfg.env.name} with --tokenizer {t.kind}")
    if t.strip_weight <= 0:
        p.append(f"tokenizer.strip_weight must be > 0, got {t.strip_weight}")
    if w.motion_input:
        from model.data.view_motion import VIEWS

        if cfg.env.name not in VIEWS or t.kind != "delta":
            p.append(f"world_model.motion_input reads a scrolling view: it needs a Δ tokenizer and an env with one "
                     f"({', '.join(VIEWS)}), not {cfg.env.name} with --tokenizer {t.kind}")
    unknown_init = sorted(set(tr.init) - set(model_names(cfg)))
    if unknown_init:
        p.append(f"train.init names {', '.join(unknown_init)}, not a model of this run "
                 f"({', '.join(model_names(cfg))})")
    if p:
        raise ConfigError("; ".join(p))
    return cfg


def model_names(cfg: Config) -> list[str]:
    """The models a run trains (and checkpoints). The actor-critic holds its EMA target inside."""
    names = ["tokenizer", "world_model", "actor_critic"]
    if cfg.train.baselines:
        names += ["world_model_no_itok", "iris_tokenizer"]
    return names


def changed_model_settings(cfg: Config, stored: Config) -> list[str]:
    """The model-defining fields (``section.field``) in which ``cfg`` differs from a checkpoint's ``stored``."""
    mine, theirs = cfg.to_dict(), stored.to_dict()
    diff = [f"{s}.{k}" for s in MODEL_SECTIONS for k in mine[s] if mine[s][k] != theirs[s].get(k)]
    if mine["train"]["baselines"] != theirs["train"]["baselines"]:
        diff.append("train.baselines")
    return diff
