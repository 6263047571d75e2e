"""The Δ-IRIS training loop: collect -> tokenizer -> world model -> actor-critic (in imagination)
-> evaluate -> checkpoint, one epoch at a time, in a run folder (model/train/run_dir.py).

Schedule (TrainConfig; the ``paper`` preset is the published Crafter schedule; model/train/schedule.py):

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

Env-frame counting rule (what makes resume exact): ``env_frames`` is the number of env steps
(transitions) held by finished episodes in the store's ``train`` split, summed over DDP ranks. An
episode still running when a checkpoint is written is counted when it finishes; one running when
the process dies is lost and never counted. Collection in epoch e tops the store up to
``collection_target(cfg, e)`` steps, so after a SIGKILL ``--resume`` redoes the unfinished epoch
without collecting its frames a second time, and no finished episode is lost or counted twice.
Metrics lines of epochs after the checkpoint are dropped on resume, so ``metrics.jsonl`` holds each
epoch once.

Distributed (``torchrun --nproc_per_node=N``, model/train/dist.py): every rank collects with its own
envs and seed into its own store (``store/`` for rank 0, ``store/rank{r}``), samples ``ceil(batch / N)``
segments, and all ranks keep identical weights. Rank 0 alone writes the run folder.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.checkpoint import (LoadedCheckpoint, build_model, checkpoint_exists, load_checkpoint, load_init_weights,
                              save_checkpoint)
from model.config import Config
from model.data.sampler import SegmentSampler
from model.data.store import EpisodeStore
from model.data.token_cache import TokenCache
from model.train.config_check import ConfigError, changed_model_settings, model_names, prepare_config
from model.train.console import Console, summary_line
from model.train.dist import Dist, setup_distributed
from model.train.experience import Experience
from model.train.media import write_media
from model.train.phases import Phases, make_optimizer
from model.train.run_dir import MetricsWriter, RunDir, RunFolderError, RunLock, write_text_atomic
from model.train.schedule import collection_target, next_epoch_seconds
from model.train.stop import StopFlag, StopRequested, StopSource

log = logging.getLogger("deltaplay.train")

Progress = Callable[[dict[str, Any]], Any]
HEADLINE = {"tokenizer_loss": "tokenizer/loss", "recon_psnr": "tokenizer/psnr",  # short names the UI plots
            "world_model_loss": "world_model/loss", "token_accuracy": "world_model/token_acc",
            "actor_critic_loss": "actor_critic/loss", "imagined_return": "actor_critic/imagined_return"}


@contextmanager
def timed(times: dict[str, float], phase: str) -> Iterator[None]:
    """Record the seconds the block took under ``phase`` (only when it finishes)."""
    t = time.perf_counter()
    yield
    times[phase] = time.perf_counter() - t


class Trainer:
    """One training run in one folder; :func:`train` documents the arguments."""

    def __init__(self, cfg: Config, run_dir: str | Path, resume: bool = False, max_epochs: int | None = None,
                 progress: Progress | None = None, console: bool = True, stop: StopSource | None = None,
                 tensorboard: bool = False, max_seconds: float | None = None):
        self.cfg = prepare_config(cfg)
        self.rd = RunDir(Path(run_dir))
        self.resume, self.max_epochs, self.max_seconds = resume, max_epochs, max_seconds
        self.progress_cb, self.tensorboard = progress, tensorboard
        self.console = Console(printing=console)
        self.stop = StopFlag(stop)
        self.dist = Dist()
        self.device = torch.device("cpu")
        self.models: dict[str, torch.nn.Module] = {}
        self.optims: dict[str, torch.optim.Optimizer] = {}
        self.epoch = 0
        self.env_frames = 0
        self.wall_time = 0.0
        self.lock: RunLock | None = None
        self.experience: Experience | None = None
        self._phase_times: dict[str, float] = {}  # seconds per phase, latest epoch that ran it

    # ---------------------------------------------------------------- setup

    def _setup(self) -> None:
        cfg = self.cfg
        self.dist = setup_distributed(cfg.device)
        self.device = self.dist.device
        if self.device.type == "cuda":  # as the published code: TF32 matmuls outside the bf16 autocast
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self._open_folder()
        torch.manual_seed(cfg.seed)
        ckpt = self._load_last()
        self._build_models(ckpt)
        self._open_data()
        if ckpt is not None:
            self._restore(ckpt.state)
        self.metrics = MetricsWriter(self.rd.metrics)
        if self.dist.main and self.resume:
            self.metrics.truncate_after(self.epoch)
        self.env_frames = self._count_frames()
        if self.dist.main:
            what = f"resumed at epoch {self.epoch}" if self.resume else "new run"
            log.info("%s in %s: env %s, preset %s, tokenizer %s (K=%d), i_tokens %s, device %s, ranks %d, "
                     "env frames %d", what, self.rd.root, cfg.env.name, cfg.preset, cfg.tokenizer.kind,
                     cfg.tokenizer.tokens_per_frame, cfg.world_model.i_tokens, self.device, self.dist.world,
                     self.env_frames)
            if self.tensorboard:
                self.console.open_tensorboard(self.rd.root / "tensorboard")

    def _open_folder(self) -> None:
        """Rank 0 checks, creates and locks the folder; every rank fails if it does not suit the request."""
        d = self.dist
        problem = None
        if d.main:
            try:
                self.rd.check(self.resume)
            except RunFolderError as e:
                problem = str(e)
            else:
                self.rd.create()
                self.lock = RunLock(self.rd.lock).acquire()
        problem = d.broadcast_object(problem)
        if problem:
            raise RunFolderError(problem)
        if d.main:
            self.console.open_log(self.rd.log)
        else:
            self.console.printing = False

    def _load_last(self) -> LoadedCheckpoint | None:
        if not (self.resume and checkpoint_exists(self.rd.last)):
            return None
        ckpt = load_checkpoint(self.rd.last, device="cpu")
        diff = changed_model_settings(self.cfg, ckpt.cfg)
        if diff:
            raise ConfigError(f"the checkpoint in {self.rd.last} was trained with other settings "
                              f"({', '.join(diff[:6])}); resume with the run's own config")
        return ckpt

    def _build_models(self, ckpt: LoadedCheckpoint | None) -> None:
        """The checkpoint's models, else new ones (warm-started from ``train.init``), and their optimisers."""
        cfg = self.cfg
        if ckpt is not None:
            self.models = {n: ckpt.models[n] for n in model_names(cfg) if n in ckpt.models}
        for name in model_names(cfg):
            if name not in self.models:
                try:
                    self.models[name] = build_model(name, cfg)
                except (ValueError, RuntimeError, AssertionError) as e:
                    raise ConfigError(f"cannot build the {name} from this config: {e}") from None
                if name in cfg.train.init:  # also on a resume that found no checkpoint yet
                    line = load_init_weights(name, cfg.train.init[name], cfg, self.models[name])
                    if self.dist.main:
                        log.info("warm start: %s", line)
        for m in self.models.values():
            m.to(self.device).eval()
            self.dist.broadcast_module(m)
        for name, m in self.models.items():
            wd = 0.0 if name == "actor_critic" else cfg.train.weight_decay
            self.optims[name] = make_optimizer(m, cfg.train.lr, wd)

    def _open_data(self) -> None:
        """The config file, this rank's episode store, its samplers and the learning phases over them."""
        cfg, d = self.cfg, self.dist
        if d.main:
            write_text_atomic(self.rd.config, cfg.to_json())
        d.barrier()
        # Cache decoded episodes by bytes, not count: sampling touches many small episodes each step.
        self.store = EpisodeStore(self.rd.store(d.rank), cache_size=100_000, cache_bytes=1 << 30)
        rng = np.random.default_rng([cfg.seed, d.rank, 1])
        alpha = cfg.train.recency_exponent
        token_cache = TokenCache(cfg.tokenizer.tokens_per_frame, frame_only=cfg.tokenizer.kind == "iris")
        self.samplers = {
            "tokenizer": SegmentSampler(self.store, cfg.train.tokenizer_seq, alpha, rng=rng),
            "world_model": SegmentSampler(self.store, cfg.train.world_model_seq + 1, alpha, rng=rng),
            "actor_critic": SegmentSampler(self.store, cfg.actor_critic.burn_in + 1, alpha,
                                           burn_in=cfg.actor_critic.burn_in, rng=rng),
        }
        self.phases = Phases(cfg, self.models, self.optims, self.samplers, token_cache, d, self._emit,
                             self._should_stop, checkpoint=self._checkpoint_within_epoch)
        self.experience = Experience(cfg, self.store, d, self.models["actor_critic"])

    def _restore(self, state: dict[str, Any]) -> None:
        """Epoch, wall time, optimisers and this rank's samplers from a checkpoint's state."""
        self.epoch = int(state.get("epoch", 0))
        self.wall_time = float(state.get("wall_time", 0.0))
        for name, opt in self.optims.items():
            if name in state.get("optimizers", {}):
                opt.load_state_dict(state["optimizers"][name])
        for name, avg in self.phases.averages.items():
            if name in state.get("averages", {}):  # a checkpoint within a phase: its average so far
                avg.load_state_dict(state["averages"][name])
        for name, s in self.samplers.items():
            key = f"{name}@{self.dist.rank}"
            if key in state.get("samplers", {}):
                s.load_state_dict(state["samplers"][key])

    def _teardown(self) -> None:
        if self.experience is not None:
            self.experience.close()
        self.console.close()
        if self.lock is not None:
            self.lock.release()
        self.dist.close()

    # ---------------------------------------------------------------- bookkeeping

    def _count_frames(self) -> int:
        return self.dist.sum_int(self.store.num_steps_in("train"))

    def _emit(self, phase: str, **kw: Any) -> None:
        if not self.dist.main:
            return
        event = {"phase": phase, "epoch": self.epoch + (0 if phase == "done" else 1),
                 "env_frames": self.env_frames, "total_frames": self.cfg.train.total_frames, **kw}
        self.console.progress(event, self.wall_time)
        if self.progress_cb is not None:
            self.progress_cb(event)

    def _should_stop(self, sync: bool = True) -> bool:
        return self.stop.check(self.dist if sync else None)

    def _tick_wall_time(self) -> None:
        now = time.perf_counter()
        self.wall_time += now - self._t_mark
        self._t_mark = now

    # ---------------------------------------------------------------- collection and evaluation

    def collect(self) -> dict[str, float]:
        """Top the store up to this epoch's target (see the module docstring), counting frames as they come."""
        base, mine0 = self.env_frames, self.store.num_steps_in("train")

        def progress(done: int, total: int) -> None:
            if not self.dist.on and self._should_stop(sync=False):
                raise StopRequested
            self.env_frames = base + self.store.num_steps_in("train") - mine0
            self._emit("collect", step=done, steps=total)

        stats = self.experience.collect(self.epoch + 1, progress)
        self.env_frames = self._count_frames()
        return stats

    # ---------------------------------------------------------------- checkpoints

    def save(self, snapshot: bool = False) -> None:
        """Write ``checkpoints/last`` (and a snapshot); a collective in DDP: every rank takes part."""
        samplers = {f"{n}@{self.dist.rank}": s.state_dict() for n, s in self.samplers.items()}
        state = {"format": 1, "epoch": self.epoch, "env_frames": self.env_frames, "wall_time": self.wall_time,
                 "world_size": self.dist.world, "optimizers": {n: o.state_dict() for n, o in self.optims.items()},
                 "samplers": {k: v for part in self.dist.all_gather(samplers) for k, v in part.items()},
                 "averages": {n: a.state_dict() for n, a in self.phases.averages.items()}}
        if self.dist.main:
            save_checkpoint(self.rd.last, self.models, self.cfg, state)
            if snapshot:
                save_checkpoint(self.rd.snapshot(self.epoch), self.models, self.cfg, state)
        self.dist.barrier()
        self.phases.updated = False

    def _checkpoint_within_epoch(self) -> None:
        """``checkpoints/last`` with the weights so far and the epoch counter unchanged (a resume redoes the epoch)."""
        self._tick_wall_time()
        self.save()
        if self.dist.main:
            log.info("checkpoint within epoch %d", self.epoch + 1)

    # ---------------------------------------------------------------- the loop

    def run_epoch(self) -> dict[str, Any]:
        cfg, e = self.cfg, self.epoch + 1
        t0 = time.perf_counter()
        torch.manual_seed(int(np.random.SeedSequence([cfg.seed, self.dist.rank, e, 7]).generate_state(1)[0]))
        rec: dict[str, Any] = {}
        times: dict[str, float] = {}
        self._emit("collect", step=0, steps=0)
        with timed(times, "collect"):
            rec |= self.collect()
        if self._should_stop():
            raise StopRequested
        with timed(times, "tokenizer"):
            rec |= self.phases.tokenizer(e)
        with timed(times, "world_model"):
            rec |= self.phases.world_model(e)
        with timed(times, "actor_critic"):
            rec |= self.phases.actor_critic(e)
        media: dict[str, str] = {}
        if e % cfg.train.eval_every == 0:
            self._emit("evaluate")
            with timed(times, "evaluate"):
                rec |= self.experience.evaluate()
            if self.dist.main:
                media = write_media(self.phases, self.rd.media, e)
        self._phase_times.update(times)
        self.epoch = e
        self._tick_wall_time()
        rec |= {short: rec[long] for short, long in HEADLINE.items() if long in rec}
        rec |= {"epoch": e, "env_frames": self.env_frames, "total_frames": cfg.train.total_frames,
                "wall_time": self.wall_time, "epoch_time": time.perf_counter() - t0, "time": time.time(),
                "fps": self.env_frames / max(self.wall_time, 1e-9), "media": media}
        if self.dist.main:
            self.metrics.write(rec)
            self.console.scalars(rec, self.env_frames)
        self.save(snapshot=e % cfg.train.snapshot_every == 0)
        return rec

    def _done(self) -> bool:
        if self.max_epochs is not None and self.epoch >= self.max_epochs:
            return True
        if self.max_seconds is not None:
            elapsed = time.perf_counter() - self._run_start
            if elapsed + next_epoch_seconds(self.cfg, self.epoch, self._phase_times) > self.max_seconds:
                log.info("time budget: %.0f s used of %.0f s, the next epoch would not fit", elapsed, self.max_seconds)
                return True
        return self.epoch >= 1 and collection_target(self.cfg, self.epoch) >= self.cfg.train.total_frames

    def _stopped(self) -> None:
        """A stop during an epoch: keep the training done so far; the epoch counter stays."""
        self._tick_wall_time()
        self.env_frames = self._count_frames()
        if self.phases.updated:
            self.save()
        log.info("stopped during epoch %d; checkpoint at epoch %d", self.epoch + 1, self.epoch)

    def run(self) -> dict[str, Any]:
        status, last = "finished", {}
        try:
            self._setup()
            self.stop.install_signals()
            self.console.open_bar(self.cfg.train.total_frames, self.env_frames)
            self._t_mark = self._run_start = time.perf_counter()
            while not self._done():
                try:
                    last = self.run_epoch()
                except StopRequested:
                    status = "stopped"
                    self._stopped()
                    break
                log.info(summary_line(last))
                self.console.say(summary_line(last))
            if status == "finished":
                log.info("finished: epoch %d, %d env frames", self.epoch, self.env_frames)
            self._emit("done", status=status)
            return {"status": status, "epoch": self.epoch, "env_frames": self.env_frames,
                    "wall_time": self.wall_time, "checkpoint": str(self.rd.last), "run_dir": str(self.rd.root),
                    "rank": self.dist.rank, "metrics": last}
        finally:
            self.stop.restore_signals()
            self._teardown()


def train(cfg: Config, run_dir: str | Path, resume: bool = False, max_epochs: int | None = None,
          progress: Progress | None = None, console: bool = True, stop: StopSource | None = None,
          tensorboard: bool = False, max_seconds: float | None = None) -> dict[str, Any]:
    """Train in ``run_dir`` until ``cfg.train.total_frames`` env frames or epoch ``max_epochs``.

    ``progress(event)`` gets dicts with ``phase`` (collect, tokenizer, world_model, actor_critic,
    evaluate, done), ``epoch``, ``env_frames``, ``total_frames`` and, in training phases, ``step``,
    ``steps`` and ``loss``. ``stop`` (an Event or a callable) ends the run at the next step with a
    checkpoint, as SIGTERM/SIGINT do. ``max_seconds`` starts no epoch that would not end within that
    wall-clock budget. Returns a summary: status, epoch, env_frames, checkpoint."""
    return Trainer(cfg, run_dir, resume=resume, max_epochs=max_epochs, progress=progress, console=console,
                   stop=stop, tensorboard=tensorboard, max_seconds=max_seconds).run()


__all__ = ["train", "Trainer"]
