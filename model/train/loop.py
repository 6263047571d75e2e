"""The Δ-IRIS training loop: collect -> tokenizer -> world model -> actor-critic (in imagination)
-> evaluate -> checkpoint, one epoch at a time, in a run folder (model/train/run_dir.py).

Schedule (TrainConfig; the ``paper`` preset is the published Crafter schedule):

* collect: epoch 1 gathers ``initial_random_frames`` env steps with a uniform random policy; later
  epochs ``frames_per_epoch`` with the actor-critic (sampling, epsilon-greedy), ``num_envs`` envs.
* tokenizer: ``first_epoch_tokenizer_steps`` then ``steps_per_epoch`` steps; a batch is
  ``tokenizer_batch`` segments of ``tokenizer_seq`` frames cut into consecutive pairs (x_{t-1}, a_{t-1}, x_t).
* world model: tokens from the frozen tokenizer (no grad); ``world_model_batch`` x ``world_model_seq``
  steps (``world_model_seq + 1`` frames, since z_{t+1} needs x_{t+1}).
* actor-critic: ``actor_critic_batch`` burn-in segments of real frames, then ``horizon`` imagined steps.
* every ``eval_every`` epochs: ``test_episodes`` real episodes with the agent (return, Crafter score,
  achievement rates), a reconstruction strip (PNG) and an imagined rollout (GIF) in ``media/``.
* checkpoint ``checkpoints/last`` every epoch, ``checkpoints/epoch_XXXX`` every ``snapshot_every``.

Optimisers: AdamW (lr, weight decay on weight matrices and embeddings only) for the tokenizer and
world model, as the published code; the actor-critic gets no weight decay (the published code uses
Adam for it). Grad-norm clip ``grad_clip``; bf16 autocast on CUDA for the tokenizer and world model.

Env-frame counting rule (what makes resume exact): ``env_frames`` is the number of env steps
(transitions) held by finished episodes in the store's ``train`` split, summed over DDP ranks. An
episode still running when a checkpoint is written is counted when it finishes; one running when
the process dies is lost and never counted. Collection in epoch e tops the store up to
``min(total_frames, initial_random_frames + (e - 1) * frames_per_epoch)`` steps, so after a
SIGKILL ``--resume`` redoes the unfinished epoch without collecting its frames a second time,
and no finished episode is lost or counted twice. Metrics lines of epochs after the checkpoint are
dropped on resume, so ``metrics.jsonl`` holds each epoch once.

Distributed (``torchrun --nproc_per_node=N``; gloo on CPU, nccl on CUDA): every rank collects with
its own envs and seed into its own store (``store/`` for rank 0, ``store/rank{r}``), samples
``ceil(batch / N)`` segments, and gradients are averaged with one all-reduce per step (no DDP
wrapper: the components train through ``compute_loss``-style methods, not ``forward``). Buffers
that change outside the optimiser (the EMA codebook) are broadcast from rank 0 after each step, so
all ranks hold identical weights. Rank 0 alone writes the run folder.
"""
from __future__ import annotations

import logging
import math
import os
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as tdist
from torch import nn

from model.checkpoint import build_model, checkpoint_exists, load_checkpoint, load_init_weights, save_checkpoint
from model.config import PRESETS, Config, TokenizerConfig
from model.device import autocast, resolve_device
from model.data.frames import to_tensor, to_uint8
from model.train.run_dir import MetricsWriter, RunDir, RunLock, write_text_atomic
from model.data.token_cache import TokenCache
from model.nets.twohot import REWARD_ENCODINGS

log = logging.getLogger("deltaplay.train")

Progress = Callable[[dict[str, Any]], Any]
MODEL_SECTIONS = ("env", "tokenizer", "world_model", "actor_critic")


class ConfigError(ValueError):
    """A config that cannot train (bad env, impossible sizes); the message says what to change."""


class RunExistsError(RuntimeError):
    """A fresh run was asked for in a folder that already holds one."""


class _Stop(Exception):
    """Raised inside collection when a stop was requested."""


# --------------------------------------------------------------------------------------- config

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
        cfg.env.num_actions = num_actions(cfg.env.name)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    except ImportError as e:
        raise ConfigError(f"env {cfg.env.name!r}: {e}") from None
    t, w, a, tr = cfg.tokenizer, cfg.world_model, cfg.actor_critic, cfg.train
    if t.kind not in ("delta", "iris"):
        p.append(f"tokenizer.kind must be delta or iris, got {t.kind!r}")
    if t.kind == "iris" and t.tokens_per_frame == TokenizerConfig().tokens_per_frame:
        t.tokens_per_frame = tr.iris_tokens
    for name, k in (("tokenizer.tokens_per_frame", t.tokens_per_frame), ("train.iris_tokens", tr.iris_tokens)):
        if k < 1 or math.isqrt(k) ** 2 != k:
            p.append(f"{name} must be a square number (tokens form a grid), got {k}")
    if not (cfg.env.image_size == t.image_size == 64):
        p.append("frames are 64x64: env.image_size and tokenizer.image_size must be 64")
    if w.embed_dim % w.num_heads:
        p.append(f"world_model.embed_dim ({w.embed_dim}) must be divisible by num_heads ({w.num_heads})")
    if w.reward_encoding not in REWARD_ENCODINGS:
        p.append(f"world_model.reward_encoding must be one of {', '.join(REWARD_ENCODINGS)}, got {w.reward_encoding!r}")
    if not 2 <= tr.world_model_seq <= w.max_steps:
        p.append(f"train.world_model_seq ({tr.world_model_seq}) must be in 2..world_model.max_steps ({w.max_steps})")
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


def collection_target(cfg: Config, epoch: int) -> int:
    """Env steps the store should hold once epoch ``epoch`` (1-based) has collected."""
    tr = cfg.train
    return min(tr.total_frames, tr.initial_random_frames + (epoch - 1) * tr.frames_per_epoch)


def steps_for(cfg: Config, component: str, epoch: int) -> int:
    tr = cfg.train
    if epoch == 1:
        return {"tokenizer": tr.first_epoch_tokenizer_steps, "world_model": tr.first_epoch_world_model_steps,
                "actor_critic": tr.first_epoch_actor_critic_steps}[component]
    return tr.steps_per_epoch


# ---------------------------------------------------------------------------------- distributed

@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def on(self) -> bool:
        return self.world > 1


def setup_distributed(device_name: str) -> tuple[Dist, torch.device]:
    """Join the torchrun process group when WORLD_SIZE > 1; pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), resolve_device(device_name)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    owns = not tdist.is_initialized()
    if owns:
        tdist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Dist(tdist.get_rank(), tdist.get_world_size(), local, owns), device


def _flat_all_reduce_mean(tensors: list[torch.Tensor], world: int) -> None:
    if not tensors:
        return
    flat = torch.cat([t.reshape(-1).float() for t in tensors])
    tdist.all_reduce(flat)
    flat /= world
    offset = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[offset:offset + n].view_as(t))
        offset += n


def _broadcast_module(module: nn.Module, params: bool = True) -> None:
    with torch.no_grad():
        for t in list(module.parameters() if params else []) + list(module.buffers()):
            tdist.broadcast(t.data, src=0)


# --------------------------------------------------------------------------------------- helpers

class Mean:
    """Running means of metric dicts."""

    def __init__(self) -> None:
        self.sum: dict[str, float] = defaultdict(float)
        self.n: dict[str, int] = defaultdict(int)

    def add(self, metrics: dict[str, float], prefix: str = "") -> None:
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and math.isfinite(v):
                self.sum[prefix + k] += float(v)
                self.n[prefix + k] += 1

    def mean(self, key: str) -> float:
        return self.sum[key] / max(self.n[key], 1)

    def result(self) -> dict[str, float]:
        return {k: self.sum[k] / self.n[k] for k in self.sum}


def make_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW; decay only on tensors with >= 2 dims (weights, embeddings), not on biases or norms."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    rest = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr)


class AgentPolicy:
    """The actor-critic as a collector policy (model/data/collector.py protocol): one LSTM state per env."""

    def __init__(self, ac, device: torch.device, temperature: float, burn_in_steps: int):
        self.ac, self.device, self.temperature = ac, device, temperature
        self.burn_in_steps = burn_in_steps

    @torch.no_grad()
    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return self.ac.act(to_tensor(obs, self.device), epsilon=0.0, temperature=self.temperature).cpu().numpy()

    def reset(self, indices) -> None:
        state, idx = self.ac._state, list(indices)
        if state is None or not idx:
            return
        if max(idx) >= state[0].size(0):  # a state left from another batch size: start afresh
            self.ac._state = None
            return
        done = torch.zeros(state[0].size(0), dtype=torch.bool)
        done[idx] = True
        self.ac.reset_where(done)

    @torch.no_grad()
    def burn_in(self, frames: np.ndarray) -> None:
        self.ac.reset(frames.shape[0])
        for k in range(frames.shape[1]):
            self.ac(to_tensor(frames[:, k], self.device))


def _env_kwargs(cfg: Config) -> dict[str, Any]:
    return {"length": cfg.env.max_episode_steps} if cfg.env.name == "crafter" else {}


# --------------------------------------------------------------------------------------- trainer

class Trainer:
    def __init__(self, cfg: Config, run_dir: str | Path, resume: bool = False, max_epochs: int | None = None,
                 progress: Progress | None = None, console: bool = True,
                 stop: Callable[[], bool] | threading.Event | None = None, tensorboard: bool = False,
                 max_seconds: float | None = None):
        self.cfg = prepare_config(cfg)
        # Wall-clock budget of this invocation: no new epoch starts unless it is expected (from the last
        # epoch's duration) to finish in time, so a timed run ends on an epoch boundary, not mid-training.
        self.max_seconds = max_seconds
        self._phase_times: dict[str, float] = {}  # seconds per phase, latest epoch that ran it
        self.rd = RunDir(Path(run_dir))
        self.resume, self.max_epochs = resume, max_epochs
        self.progress_cb, self.console, self.tensorboard = progress, console, tensorboard
        self._external_stop = stop
        self._stop_requested = False
        self.dist = Dist()
        self.device = torch.device("cpu")
        self.models: dict[str, nn.Module] = {}
        self.optims: dict[str, torch.optim.Optimizer] = {}
        self.epoch = 0
        self.env_frames = 0
        self.wall_time = 0.0
        self._dirty = False  # trained since the last checkpoint
        self._bar = None
        self._last_progress_log = 0.0  # train.log gets a progress line at most every 30 s
        self._tb = None
        self._log_handler: logging.Handler | None = None

    # ---------------------------------------------------------------- setup

    def _check_folder(self) -> str | None:
        """Rank 0: is the folder usable for this request? Returns an error message or None."""
        rd = self.rd
        has_run = rd.config.exists() or checkpoint_exists(rd.last) or any(rd.root.glob("store/episodes/*/*.npz"))
        if not self.resume and has_run:
            return (f"{rd.root} already holds a run; pass --resume to continue it or choose another --run-dir")
        if self.resume and not (rd.config.exists() or checkpoint_exists(rd.last)):
            return f"nothing to resume in {rd.root} (no checkpoint and no config.json)"
        return None

    def _setup(self) -> None:
        cfg = self.cfg
        self.dist, self.device = setup_distributed(cfg.device)
        if self.device.type == "cuda":  # as the published code: TF32 matmuls outside the bf16 autocast
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        d = self.dist
        err = None
        if d.main:
            err = self._check_folder()
            if err is None:
                self.rd.create()
                self.lock = RunLock(self.rd.lock).acquire()
        if d.on:
            box = [err]
            tdist.broadcast_object_list(box, src=0)
            err = box[0]
        if err:
            raise RunExistsError(err) if "already holds" in err else ConfigError(err)
        if d.main:
            self._start_logging()
        torch.manual_seed(cfg.seed)
        ckpt = None
        if self.resume and checkpoint_exists(self.rd.last):
            ckpt = load_checkpoint(self.rd.last, device="cpu")
            self._check_same_models(ckpt.cfg)
            self.models = {n: ckpt.models[n] for n in model_names(cfg) if n in ckpt.models}
        for name in model_names(cfg):
            if name not in self.models:
                try:
                    self.models[name] = build_model(name, cfg)
                except (ValueError, RuntimeError, AssertionError) as e:
                    raise ConfigError(f"cannot build the {name} from this config: {e}") from None
                if name in cfg.train.init:  # also on a resume that found no checkpoint yet
                    line = load_init_weights(name, cfg.train.init[name], cfg, self.models[name])
                    if d.main:
                        log.info("warm start: %s", line)
        for m in self.models.values():
            m.to(self.device).eval()
        if d.on:
            for m in self.models.values():
                _broadcast_module(m)
        wd = cfg.train.weight_decay
        for name, m in self.models.items():
            self.optims[name] = make_optimizer(m, cfg.train.lr, 0.0 if name == "actor_critic" else wd)

        from model.data.sampler import SegmentSampler
        from model.data.store import EpisodeStore

        if d.main:
            write_text_atomic(self.rd.config, cfg.to_json())
        if d.on:
            tdist.barrier()
        # Cache decoded episodes by bytes, not count: sampling touches many small episodes each step.
        self.store = EpisodeStore(self.rd.store(d.rank), cache_size=100_000, cache_bytes=1 << 30)
        rng = np.random.default_rng([cfg.seed, d.rank, 1])
        alpha = cfg.train.recency_exponent
        self.token_cache = TokenCache(cfg.tokenizer.tokens_per_frame, frame_only=cfg.tokenizer.kind == "iris")
        self.samplers = {
            "tokenizer": SegmentSampler(self.store, cfg.train.tokenizer_seq, alpha, rng=rng),
            "world_model": SegmentSampler(self.store, cfg.train.world_model_seq + 1, alpha, rng=rng),
            "actor_critic": SegmentSampler(self.store, cfg.actor_critic.burn_in + 1, alpha,
                                           burn_in=cfg.actor_critic.burn_in, rng=rng),
        }
        if ckpt is not None:
            st = ckpt.state
            self.epoch = int(st.get("epoch", 0))
            self.wall_time = float(st.get("wall_time", 0.0))
            for name, opt in self.optims.items():
                if name in st.get("optimizers", {}):
                    opt.load_state_dict(st["optimizers"][name])
            for name, s in self.samplers.items():
                key = f"{name}@{d.rank}"
                if key in st.get("samplers", {}):
                    s.load_state_dict(st["samplers"][key])
        self.metrics = MetricsWriter(self.rd.metrics)
        if d.main and self.resume:
            self.metrics.truncate_after(self.epoch)
        self.env_frames = self._count_frames()
        if d.main:
            what = f"resumed at epoch {self.epoch}" if self.resume else "new run"
            log.info("%s in %s: env %s, preset %s, tokenizer %s (K=%d), i_tokens %s, device %s, ranks %d, "
                     "env frames %d", what, self.rd.root, cfg.env.name, cfg.preset, cfg.tokenizer.kind,
                     cfg.tokenizer.tokens_per_frame, cfg.world_model.i_tokens, self.device, d.world,
                     self.env_frames)
            if self.tensorboard:
                self._start_tensorboard()

    def _check_same_models(self, stored: Config) -> None:
        mine, theirs = self.cfg.to_dict(), stored.to_dict()
        diff = [f"{s}.{k}" for s in MODEL_SECTIONS for k in mine[s] if mine[s][k] != theirs[s].get(k)]
        if mine["train"]["baselines"] != theirs["train"]["baselines"]:
            diff.append("train.baselines")
        if diff:
            raise ConfigError(f"the checkpoint in {self.rd.last} was trained with other settings "
                              f"({', '.join(diff[:6])}); resume with the run's own config")

    def _start_logging(self) -> None:
        h = logging.FileHandler(self.rd.log, encoding="utf-8")
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(h)
        log.setLevel(logging.INFO)
        self._log_handler = h

    def _start_tensorboard(self) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.warning("--tensorboard: the tensorboard package is not installed; skipping")
            self._say("tensorboard is not installed (pip install tensorboard); metrics.jsonl only")
            return
        self._tb = SummaryWriter(str(self.rd.root / "tensorboard"))

    def _teardown(self) -> None:
        for c in ("_train_col", "_eval_collector"):
            col = getattr(self, c, None)
            if col is not None:
                col.close()
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.close()
        if getattr(self, "lock", None) is not None:
            self.lock.release()
        if self._log_handler is not None:
            log.removeHandler(self._log_handler)
            self._log_handler.close()
        if self.dist.owns_group and tdist.is_initialized():
            tdist.destroy_process_group()

    # ---------------------------------------------------------------- bookkeeping

    def _count_frames(self) -> int:
        n = self.store.num_steps_in("train")
        if self.dist.on:
            t = torch.tensor([n], dtype=torch.long, device=self.device)  # nccl needs CUDA tensors
            tdist.all_reduce(t)
            n = int(t.item())
        return n

    def _say(self, text: str) -> None:
        if not (self.dist.main and self.console):
            return
        if self._bar is not None:
            self._bar.write(text)
        else:
            print(text, flush=True)

    def _emit(self, phase: str, **kw: Any) -> None:
        if not self.dist.main:
            return
        event = {"phase": phase, "epoch": self.epoch + (0 if phase == "done" else 1),
                 "env_frames": self.env_frames, "total_frames": self.cfg.train.total_frames, **kw}
        now = time.monotonic()
        if "step" in kw and now - self._last_progress_log >= 30.0:
            # The bar is off when stdout is not a terminal (nohup, the web UI's jobs): keep the log alive.
            self._last_progress_log = now
            loss = f" loss {kw['loss']:.4f}" if "loss" in kw else ""
            log.info("epoch %d %s step %s/%s%s", event["epoch"], phase, kw["step"], kw["steps"], loss)
        if self._bar is not None:
            self._bar.n = min(self.env_frames, self._bar.total)
            post = {"ep": event["epoch"], "phase": phase}
            if "step" in kw:
                post["step"] = f"{kw['step']}/{kw['steps']}"
            if "loss" in kw:
                post["loss"] = f"{kw['loss']:.3f}"
            if self.wall_time > 0 and self.env_frames:
                fps = self.env_frames / self.wall_time
                post["fps"] = f"{fps:.1f}"
                post["eta"] = _fmt_s(max(0, self.cfg.train.total_frames - self.env_frames) / fps)
            self._bar.set_postfix(post, refresh=False)
            self._bar.update(0)
        if self.progress_cb is not None:
            self.progress_cb(event)

    def _install_signals(self) -> list[tuple[int, Any]]:
        if threading.current_thread() is not threading.main_thread():
            return []
        old = []

        first: list[float] = []

        def handler(signum, frame):
            # A second signal gives up at once, unless it is the echo of a process-group kill
            # (`timeout`, systemd and shells deliver the same signal twice within a moment).
            if self._stop_requested and first and time.monotonic() - first[0] > 2.0:
                raise KeyboardInterrupt
            if not first:
                first.append(time.monotonic())
            self._stop_requested = True
            log.info("signal %d: stopping after the current step", signum)

        for sig in (signal.SIGTERM, signal.SIGINT):
            old.append((sig, signal.signal(sig, handler)))
        return old

    def _should_stop(self, sync: bool = True) -> bool:
        ext = self._external_stop
        if ext is not None and (ext.is_set() if isinstance(ext, threading.Event) else ext()):
            self._stop_requested = True
        if self.dist.on and sync:
            t = torch.tensor([int(self._stop_requested)], dtype=torch.int32, device=self.device)
            tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
            self._stop_requested = bool(t.item())
        return self._stop_requested

    # ---------------------------------------------------------------- optimisation

    def _autocast(self):
        return autocast(self.device, self.cfg.train.autocast)

    def _optimize(self, name: str, loss: torch.Tensor) -> float:
        model, opt = self.models[name], self.optims[name]
        params = [p for p in model.parameters() if p.requires_grad]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.dist.on:
            for p in params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
            _flat_all_reduce_mean([p.grad for p in params], self.dist.world)
        norm = torch.nn.utils.clip_grad_norm_(params, self.cfg.train.grad_clip)
        opt.step()
        if self.dist.on:
            _broadcast_module(model, params=False)
        self._dirty = True
        return float(norm)

    def _batch(self, total: int) -> int:
        return max(1, math.ceil(total / self.dist.world))

    def _steps(self, n: int, phase: str):
        for i in range(n):
            if self._should_stop():
                raise _Stop
            yield i

    def _pairs(self):
        """(prev, actions, next) frame pairs of one tokenizer batch (only real transitions)."""
        from model.data.sampler import to_torch

        for _ in range(100):
            b = to_torch(self.samplers["tokenizer"].sample(self._batch(self.cfg.train.tokenizer_batch)), self.device)
            valid = b.action_mask[:, :-1]
            if valid.any():
                return b.frames[:, :-1][valid], b.actions[:, :-1][valid], b.frames[:, 1:][valid]
        raise RuntimeError("the store holds no transitions to train the tokenizer on")

    def train_tokenizer(self) -> dict[str, float]:
        names = ["tokenizer"] + (["iris_tokenizer"] if "iris_tokenizer" in self.models else [])
        n = steps_for(self.cfg, "tokenizer", self.epoch + 1)
        for name in names:
            self.models[name].train()
        agg = Mean()
        try:
            for i in self._steps(n, "tokenizer"):
                prev, act, nxt = self._pairs()
                for name in names:
                    with self._autocast():
                        loss, m = self.models[name].compute_loss(prev, act, nxt)
                    m["loss"] = loss.item()
                    m["grad_norm"] = self._optimize(name, loss)
                    agg.add(m, prefix=f"{name}/")
                self._emit("tokenizer", step=i + 1, steps=n, loss=agg.mean("tokenizer/loss"))
        finally:
            for name in names:
                self.models[name].eval()
        return agg.result()

    def _wm_batch(self):
        """World-model inputs from one sampled segment: L steps need L+1 frames."""
        from model.data.sampler import to_torch

        tok = self.models["tokenizer"]
        raw = self.samplers["world_model"].sample(self._batch(self.cfg.train.world_model_batch))
        b = to_torch(raw, self.device)

        def encode(prev, actions, nxt):
            with torch.no_grad(), self._autocast():
                return tok.encode(prev, actions, nxt)

        tokens = self.token_cache.tokens(raw, b.frames, encode)
        weights = self.models["world_model"].step_weights(b.frames)
        return (b.frames[:, :-1], b.actions[:, :-1], tokens, b.rewards[:, :-1], b.ends[:, :-1], b.action_mask[:, :-1],
                weights)

    def train_world_model(self) -> dict[str, float]:
        names = ["world_model"] + (["world_model_no_itok"] if "world_model_no_itok" in self.models else [])
        n = steps_for(self.cfg, "world_model", self.epoch + 1)
        V = self.cfg.tokenizer.vocab_size
        counts = torch.zeros(V, dtype=torch.long)
        for name in names:
            self.models[name].train()
        self.token_cache.clear()  # the tokenizer trained since the last phase
        agg = Mean()
        try:
            for i in self._steps(n, "world_model"):
                frames, actions, tokens, rewards, ends, mask, weights = self._wm_batch()
                counts += torch.bincount(tokens[mask].flatten().cpu(), minlength=V)
                for name in names:
                    wm = self.models[name]
                    with self._autocast():
                        loss, m = wm.compute_loss(frames if wm.i_tokens else None, actions, tokens, rewards, ends, mask,
                                                  weights)
                    m["grad_norm"] = self._optimize(name, loss)
                    agg.add(m, prefix=f"{name}/")
                self._emit("world_model", step=i + 1, steps=n, loss=agg.mean("world_model/loss"))
        finally:
            for name in names:
                self.models[name].eval()
        out = agg.result()
        if counts.sum() > 0:
            p = counts.float() / counts.sum()
            nz = p[p > 0]
            out["codebook_usage"] = float((counts > 0).float().mean())
            out["codebook_perplexity"] = float(torch.exp(-(nz * nz.log()).sum()))
        return out

    def train_actor_critic(self) -> dict[str, float]:
        from model.nets.imagination import DreamEnv
        from model.data.sampler import to_torch

        n = steps_for(self.cfg, "actor_critic", self.epoch + 1)
        ac = self.models["actor_critic"]
        dream = DreamEnv(self.models["tokenizer"], self.models["world_model"], temperature=1.0,
                         autocast_mode=self.cfg.train.autocast if self.device.type == "cuda" else None,
                         probe_actions=self.cfg.actor_critic.lookahead_weight > 0)
        ac.train()
        agg = Mean()
        try:
            for i in self._steps(n, "actor_critic"):
                batch = self.samplers["actor_critic"].sample_burn_in(self._batch(self.cfg.train.actor_critic_batch))
                b = to_torch(batch, self.device)
                loss, m = ac.imagine_and_loss(dream, b.frames, b.actions[:, :-1])
                m["grad_norm"] = self._optimize("actor_critic", loss)
                agg.add(m, prefix="actor_critic/")
                self._emit("actor_critic", step=i + 1, steps=n, loss=agg.mean("actor_critic/loss"))
        finally:
            ac.eval()
        return agg.result()

    # ---------------------------------------------------------------- collection and evaluation

    def _collector(self, attr: str, num_envs: int, seed: int):
        from model.data.collector import Collector

        col = getattr(self, attr, None)
        if col is None:
            col = Collector(self.cfg.env.name, num_envs, self.store, seed=seed,
                            processes=self.cfg.env.name != "gridworld", env_kwargs=_env_kwargs(self.cfg))
            setattr(self, attr, col)
        return col

    def collect(self) -> dict[str, float]:
        """Top the store up to this epoch's target (see the module docstring)."""
        from model.data.collector import EpsilonGreedy, RandomPolicy

        cfg, d, e = self.cfg, self.dist, self.epoch + 1
        mine = math.ceil(collection_target(cfg, e) / d.world)
        need = mine - self.store.num_steps_in("train")
        # A fresh seed stream per (run seed, rank, start epoch): a resumed run does not replay the worlds
        # of its first epochs.
        col = self._collector("_train_col", cfg.train.num_envs,
                              seed=int(np.random.SeedSequence([cfg.seed, d.rank, e]).generate_state(1)[0]))
        stats: dict[str, float] = {}
        if need > 0:
            A = cfg.env.num_actions
            if e == 1:
                policy = RandomPolicy(A, seed=cfg.seed * 1000 + d.rank, repeat=cfg.train.random_repeat)
            else:
                policy = EpsilonGreedy(AgentPolicy(self.models["actor_critic"], self.device,
                                                   cfg.actor_critic.temperature, cfg.actor_critic.burn_in),
                                       cfg.train.epsilon, A, seed=cfg.seed * 1000 + d.rank + e)
            t0 = time.perf_counter()

            def progress(done: int, total: int) -> None:
                if not d.on and self._should_stop(sync=False):
                    raise _Stop
                self.env_frames = self._base_frames + self.store.num_steps_in("train") - self._my_frames0
                self._emit("collect", step=done, steps=total)

            self._base_frames, self._my_frames0 = self.env_frames, self.store.num_steps_in("train")
            out = col.collect(policy, need, progress=progress)
            while not self.store.num_steps_in("train"):  # nothing finished yet: training needs an episode
                more = col.collect(policy, 16 * cfg.train.num_envs, progress=progress)
                out = {k: out[k] + more[k] for k in out}
            if out["returns"]:
                stats["collect/return"] = float(np.mean(out["returns"]))
                stats["collect/episodes"] = float(len(out["returns"]))
            stats["collect/steps_per_s"] = out["steps"] / max(time.perf_counter() - t0, 1e-9)
        self.env_frames = self._count_frames()
        return stats

    def evaluate(self) -> dict[str, Any]:
        """Test episodes in the real env with the agent (no exploration), split across ranks."""
        from model.data.collector import Collector
        from model.data.crafter_score import crafter_score

        cfg, d = self.cfg, self.dist
        n = math.ceil(cfg.train.test_episodes / d.world)
        summaries: list[dict[str, Any]] = []
        if n > 0:
            if getattr(self, "_eval_collector", None) is None:
                self._eval_collector = Collector(
                    cfg.env.name, min(n, cfg.train.num_envs), self.store,
                    seed=int(np.random.SeedSequence([cfg.seed, d.rank, 10**6]).generate_state(1)[0]),
                    processes=cfg.env.name != "gridworld", env_kwargs=_env_kwargs(cfg))
            self.store.clear("test")
            policy = AgentPolicy(self.models["actor_critic"], self.device, cfg.actor_critic.temperature,
                                 cfg.actor_critic.burn_in)
            ids = self._eval_collector.collect_episodes(policy, n, split="test")
            for i in ids:
                ep = self.store.get(i)
                summaries.append({"return": ep.return_, "length": ep.length, "names": list(ep.achievement_names),
                                  "unlocked": [bool(v) for v in ep.unlocked().values()]})
        if d.on:
            gathered: list[Any] = [None] * d.world
            tdist.all_gather_object(gathered, summaries)
            summaries = [s for part in gathered for s in part]
        if not summaries:
            return {}
        returns = np.array([s["return"] for s in summaries])
        out: dict[str, Any] = {"return": float(returns.mean()), "return_std": float(returns.std()),
                               "episode_length": float(np.mean([s["length"] for s in summaries])),
                               "test_episodes": len(summaries)}
        names = summaries[0]["names"]
        if names:
            unlocked = np.array([s["unlocked"] for s in summaries], dtype=bool)
            rates = {name: float(100.0 * unlocked[:, j].mean()) for j, name in enumerate(names)}
            out["achievements"] = rates
            out["crafter_score"] = crafter_score(rates)
        return out

    @torch.no_grad()
    def write_media(self) -> dict[str, str]:
        """A reconstruction strip (real over reconstructed) and a GIF of the agent in the dream."""
        import imageio.v3 as iio

        from model.nets.imagination import DreamEnv
        from model.data.sampler import to_torch

        cfg, e = self.cfg, self.epoch + 1
        out: dict[str, str] = {}
        tok = self.models["tokenizer"]
        prev, act, nxt = self._pairs()
        k = min(8, nxt.size(0))
        recon, _ = tok.reconstruct(prev[:k], act[:k], nxt[:k])
        strip = np.concatenate([np.concatenate(list(to_uint8(nxt[:k])), axis=1),
                                np.concatenate(list(to_uint8(recon)), axis=1)], axis=0)
        png = self.rd.media / f"recon_epoch_{e:04d}.png"
        iio.imwrite(png, strip)
        out["recon"] = str(png)

        b = to_torch(self.samplers["actor_critic"].sample_burn_in(1), self.device)
        dream = DreamEnv(tok, self.models["world_model"], temperature=1.0,
                         autocast_mode=cfg.train.autocast if self.device.type == "cuda" else None)
        ac = self.models["actor_critic"]
        ac.reset(1)
        for t in range(b.frames.size(1) - 1):
            ac(b.frames[:, t])
        frame = dream.reset(b.frames, b.actions[:, :-1])
        frames = [to_uint8(frame[0])]
        for _ in range(max(16, 2 * cfg.actor_critic.horizon)):
            a = ac.act(frame, temperature=cfg.actor_critic.temperature)
            frame, _, end_prob = dream.step(a)
            frames.append(to_uint8(frame[0]))
            if float(end_prob[0]) > 0.5:
                break
        gif = self.rd.media / f"dream_epoch_{e:04d}.gif"
        big = [f.repeat(4, axis=0).repeat(4, axis=1) for f in frames]  # nearest-neighbour x4
        iio.imwrite(gif, np.stack(big), duration=100, loop=0)
        out["dream"] = str(gif)
        return out

    # ---------------------------------------------------------------- checkpoints

    def _state(self) -> dict[str, Any]:
        samplers = {f"{n}@{self.dist.rank}": s.state_dict() for n, s in self.samplers.items()}
        if self.dist.on:
            gathered: list[Any] = [None] * self.dist.world
            tdist.all_gather_object(gathered, samplers)
            samplers = {k: v for part in gathered for k, v in part.items()}
        return {"format": 1, "epoch": self.epoch, "env_frames": self.env_frames, "wall_time": self.wall_time,
                "world_size": self.dist.world,
                "optimizers": {n: o.state_dict() for n, o in self.optims.items()}, "samplers": samplers}

    def save(self, snapshot: bool = False) -> None:
        state = self._state()  # collective in DDP: every rank takes part
        if self.dist.main:
            save_checkpoint(self.rd.last, self.models, self.cfg, state)
            if snapshot:
                save_checkpoint(self.rd.snapshot(self.epoch), self.models, self.cfg, state)
        if self.dist.on:
            tdist.barrier()
        self._dirty = False

    # ---------------------------------------------------------------- the loop

    def run_epoch(self) -> dict[str, Any]:
        cfg, e = self.cfg, self.epoch + 1
        t0 = time.perf_counter()
        seed = int(np.random.SeedSequence([cfg.seed, self.dist.rank, e, 7]).generate_state(1)[0])
        torch.manual_seed(seed)
        rec: dict[str, Any] = {}
        phase_times: dict[str, float] = {}

        def timed(phase: str, fn: Callable[[], dict[str, Any]]) -> None:
            t = time.perf_counter()
            rec.update(fn())
            phase_times[phase] = time.perf_counter() - t

        self._emit("collect", step=0, steps=0)
        timed("collect", self.collect)
        if self._should_stop():
            raise _Stop
        timed("tokenizer", self.train_tokenizer)
        timed("world_model", self.train_world_model)
        timed("actor_critic", self.train_actor_critic)
        media: dict[str, str] = {}
        if e % cfg.train.eval_every == 0:
            self._emit("evaluate")
            timed("evaluate", self.evaluate)
            if self.dist.main:
                media = self.write_media()
        self._phase_times.update(phase_times)
        self.epoch = e
        self.wall_time += time.perf_counter() - self._t_mark
        self._t_mark = time.perf_counter()
        rec.update(self._headline(rec))
        rec.update({"epoch": e, "env_frames": self.env_frames, "total_frames": cfg.train.total_frames,
                    "wall_time": self.wall_time, "epoch_time": time.perf_counter() - t0, "time": time.time(),
                    "fps": self.env_frames / max(self.wall_time, 1e-9), "media": media})
        if self.dist.main:
            self.metrics.write(rec)
            if self._tb is not None:
                for k, v in rec.items():
                    if isinstance(v, (int, float)) and k not in ("epoch", "time"):
                        self._tb.add_scalar(k, v, self.env_frames)
        self.save(snapshot=e % cfg.train.snapshot_every == 0)
        return rec

    @staticmethod
    def _headline(rec: dict[str, Any]) -> dict[str, Any]:
        """Short top-level names for the numbers the UI plots."""
        keys = {"tokenizer_loss": "tokenizer/loss", "recon_psnr": "tokenizer/psnr",
                "world_model_loss": "world_model/loss", "token_accuracy": "world_model/token_acc",
                "actor_critic_loss": "actor_critic/loss", "imagined_return": "actor_critic/imagined_return"}
        return {short: rec[long] for short, long in keys.items() if long in rec}

    def _summary_line(self, rec: dict[str, Any]) -> str:
        parts = [f"epoch {rec['epoch']}", f"frames {rec['env_frames']}/{rec['total_frames']}"]
        for label, key, fmt in (("tok", "tokenizer_loss", ".4f"), ("psnr", "recon_psnr", ".1f"),
                                ("wm", "world_model_loss", ".3f"), ("acc", "token_accuracy", ".2f"),
                                ("ac", "actor_critic_loss", ".3f"), ("return", "return", ".2f"),
                                ("score", "crafter_score", ".2f")):
            if key in rec:
                parts.append(f"{label} {rec[key]:{fmt}}")
        parts.append(f"{rec['fps']:.1f} fps")
        return " | ".join(parts)

    def _next_epoch_estimate(self) -> float:
        """Seconds the next epoch should take: each phase of the last epoch scaled by its share of work
        (the first epoch's long warm-up says little about the later, shorter epochs)."""
        times, cfg, e = self._phase_times, self.cfg, self.epoch
        if not times:  # no epoch done yet in this invocation: the first one always runs
            return 0.0
        est = 0.0
        for comp in ("tokenizer", "world_model", "actor_critic"):
            est += times.get(comp, 0.0) * steps_for(cfg, comp, e + 1) / max(1, steps_for(cfg, comp, e))
        collected = collection_target(cfg, e) - collection_target(cfg, e - 1) if e > 1 else collection_target(cfg, 1)
        upcoming = collection_target(cfg, e + 1) - collection_target(cfg, e)
        est += times.get("collect", 0.0) * upcoming / max(1, collected)
        if (e + 1) % cfg.train.eval_every == 0:
            est += times.get("evaluate", 0.0)
        return est

    def _done(self) -> bool:
        if self.max_epochs is not None and self.epoch >= self.max_epochs:
            return True
        if self.max_seconds is not None:
            elapsed = time.perf_counter() - self._run_start
            if elapsed + self._next_epoch_estimate() > self.max_seconds:
                log.info("time budget: %.0f s used of %.0f s, the next epoch would not fit", elapsed, self.max_seconds)
                return True
        return self.epoch >= 1 and collection_target(self.cfg, self.epoch) >= self.cfg.train.total_frames

    def run(self) -> dict[str, Any]:
        old_handlers = []
        status = "finished"
        last: dict[str, Any] = {}
        try:
            self._setup()
            old_handlers = self._install_signals()
            if self.dist.main and self.console:
                from tqdm import tqdm

                total = self.cfg.train.total_frames
                self._bar = tqdm(total=total, initial=min(self.env_frames, total), unit="frame", dynamic_ncols=True,
                                 disable=None, bar_format="{n_fmt}/{total_fmt} frames |{bar}| {postfix}")
            self._t_mark = self._run_start = time.perf_counter()
            while not self._done():
                try:
                    last = self.run_epoch()
                except _Stop:
                    status = "stopped"
                    self.wall_time += time.perf_counter() - self._t_mark
                    self._t_mark = time.perf_counter()
                    self.env_frames = self._count_frames()
                    if self._dirty:  # keep the training done so far; the epoch counter stays
                        self.save()
                    log.info("stopped during epoch %d; checkpoint at epoch %d", self.epoch + 1, self.epoch)
                    break
                log.info(self._summary_line(last))
                self._say(self._summary_line(last))
            if status == "finished":
                log.info("finished: epoch %d, %d env frames", self.epoch, self.env_frames)
            self._emit("done", status=status)
            return {"status": status, "epoch": self.epoch, "env_frames": self.env_frames,
                    "wall_time": self.wall_time, "checkpoint": str(self.rd.last), "run_dir": str(self.rd.root),
                    "rank": self.dist.rank, "metrics": last}
        finally:
            for sig, h in old_handlers:
                signal.signal(sig, h)
            self._teardown()


def train(cfg: Config, run_dir: str | Path, resume: bool = False, max_epochs: int | None = None,
          progress: Progress | None = None, console: bool = True,
          stop: Callable[[], bool] | threading.Event | None = None, tensorboard: bool = False,
          max_seconds: float | None = None) -> dict[str, Any]:
    """Train in ``run_dir`` until ``cfg.train.total_frames`` env frames or epoch ``max_epochs``.

    ``progress(event)`` gets dicts with ``phase`` (collect, tokenizer, world_model, actor_critic,
    evaluate, done), ``epoch``, ``env_frames``, ``total_frames`` and, in training phases, ``step``,
    ``steps`` and ``loss``. ``stop`` (an Event or a callable) ends the run at the next step with a
    checkpoint, as SIGTERM/SIGINT do. ``max_seconds`` starts no epoch that would not end within that
    wall-clock budget. Returns a summary: status, epoch, env_frames, checkpoint."""
    return Trainer(cfg, run_dir, resume=resume, max_epochs=max_epochs, progress=progress, console=console,
                   stop=stop, tensorboard=tensorboard, max_seconds=max_seconds).run()


def _fmt_s(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h{(s % 3600) // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


__all__ = ["train", "Trainer", "prepare_config", "ConfigError", "RunExistsError", "collection_target",
           "steps_for", "model_names"]
