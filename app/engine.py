"""The play engine: one place that steps a dream, so every front end (pygame window, web UI, GIF
export, benchmarks) behaves the same and none of them touches a model directly.

A :class:`PlaySession` is one player's dream: a batch-1 :class:`~model.nets.imagination.DreamEnv` (its KV
cache is the model's memory), optionally a *shadow* real env stepped with the same actions (to measure
how far the dream drifts from reality), a controller (a human, or the trained agent acting on the dream
frame), and a frame recorder. Weights live in a :class:`~app.bundle.ModelBundle`, cached per checkpoint
folder, so many sessions (browser tabs) share one copy.

Memory horizon (a playground feature, not in the paper): the world model was trained on
``world_model.max_steps`` steps of context. After ``horizon`` dream steps the session flushes the KV
cache and re-primes it from the dream's *own* last frames and actions (never from the real env), so the
model always works inside the context length it was trained on and the dream can go on forever.
"""
from __future__ import annotations

import dataclasses
import random
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from app import branching
from app.branching import Branch, Inspection
from app.bundle import BUNDLED_CHECKPOINT, TRAIN_HINT, CheckpointMissing, ModelBundle, resolve_checkpoint_path
from model.data.frames import to_tensor, to_uint8
from model.data.policies import Agent

# The front ends' one entry: the bundle names are re-exported beside the session's.
__all__ = ["BUNDLED_CHECKPOINT", "Branch", "Inspection", "TRAIN_HINT", "CheckpointMissing", "ModelBundle", "PlaySession", "StepInfo",
           "VariantUnavailable", "resolve_checkpoint_path", "set_play_threads"]


class VariantUnavailable(RuntimeError):
    """The checkpoint lacks the requested world-model variant (e.g. no model without I-tokens)."""


# ------------------------------------------------------------------------------------- session

@dataclass
class StepInfo:
    """What a front end shows after each operation."""

    step: int  # dream steps since the last reset
    action_name: str | None  # the action that led to this frame (None right after a reset)
    reward: float  # the dream's predicted reward for that action
    end_prob: float  # the dream's predicted probability that the episode ended
    return_: float  # sum of predicted rewards since the reset
    dream_frame: np.ndarray  # uint8 (H, W, 3)
    real_frame: np.ndarray | None  # the shadow env's (or the replayed episode's) frame
    pixel_error: float | None  # mean |dream - real| in 0..255 units
    achievements: dict[str, int] | None  # Crafter achievements unlocked in the shadow env
    fps: float  # steps per second of this session's recent steps
    i_tokens: bool
    controller: str  # "human" | "agent" | "replay"
    message: str = ""
    horizon: int = 0
    steps_since_flush: int = 0
    real_return: float | None = None
    real_done: bool = False
    action: int | None = None  # index of action_name
    real_pos: tuple[int, int] | None = None  # the shadow env's player position in its world (Crafter), if it says


class PlaySession:
    """One player's dream. All public methods are thread-safe (one lock per session)."""

    def __init__(self, bundle: ModelBundle, shadow: bool = True, seed: int | None = None,
                 temperature: float = 1.0, horizon: int | None = None, i_tokens: bool | None = None):
        from model.data.envs import action_names, keymap_for

        self.bundle = bundle
        self.env_name = bundle.env_name
        self.action_names: list[str] = list(action_names(self.env_name))
        self.keymap: dict[str, int] = dict(keymap_for(self.env_name))
        self.available_variants = {"i_tokens": True in bundle.world_models,
                                   "no_i_tokens": False in bundle.world_models}
        self.shadow = shadow
        self.controller = "human"
        self.agent_view = "dream"  # the agent sees the dream frame ("real": the shadow env's frame)
        self.temperature = float(temperature)
        self.i_tokens = (next(iter(bundle.world_models)) if i_tokens is None else bool(i_tokens))
        if self.i_tokens not in bundle.world_models:
            raise VariantUnavailable(self._variant_message(self.i_tokens))
        wm_cfg = bundle.cfg.world_model
        # Context used to (re-)prime the dream: as many frames as the agent's burn-in.
        self.prime_steps = max(1, min(bundle.cfg.actor_critic.burn_in, wm_cfg.max_steps - 1))
        self.max_horizon = max(1000, wm_cfg.max_steps)
        self.horizon = self._clamp_horizon(horizon if horizon is not None else wm_cfg.max_steps - self.prime_steps)
        self.recorder = _recorder()
        self._rng = random.Random(seed)
        self._lock = threading.RLock()
        self._env = None
        self._dream = None
        self._replay: tuple[Any, int] | None = None  # (episode, index of the current real frame)
        self._frame: torch.Tensor | None = None  # current dream frame (1, 3, H, W)
        self._history: deque[torch.Tensor] = deque(maxlen=wm_cfg.max_steps)  # recent dream frames
        self._actions: deque[int] = deque(maxlen=wm_cfg.max_steps)  # actions between them
        self._step_times: deque[float] = deque(maxlen=20)
        self._info: StepInfo | None = None
        self.seed: int | None = None
        self._real_frame: np.ndarray | None = None
        self._real_info: dict = {}
        self._real_done, self._real_return = False, 0.0
        self._step, self._return, self._since_flush = 0, 0.0, 0
        self._agent: Agent | None = None
        self._branches: tuple[int, list[Branch]] | None = None  # (action, futures) of the last branches()

    # ------------------------------------------------------------------ public operations
    @property
    def info(self) -> StepInfo | None:
        return self._info

    def reset(self, seed: int | None = None, made: tuple[Any, Any, dict] | None = None) -> StepInfo:
        """Start a fresh real episode (seeded), prime the dream on its first frame. ``made``: (env, first
        observation, info) of an env already reset with ``seed`` elsewhere (app/webui/sessions.py makes Crafter's
        worlds in another process), used as it is."""
        from model.data.envs import make_env

        with self._lock:
            self.seed = int(seed) if seed is not None else self._rng.randrange(2**31)
            if made is not None:
                self._close_env()
                self._env, obs, info = made
            else:
                if self._env is None:
                    self._env = make_env(self.env_name)  # seeded by the reset below (one world generation)
                obs, info = self._env.reset(seed=self.seed)
            self._replay = None
            self._real_frame = np.asarray(obs, np.uint8)
            self._real_info = info
            self._real_done = False
            self._real_return = 0.0
            if not self.shadow:
                self._close_env()
            return self._start([self._real_frame], [], f"new episode (seed {self.seed})")

    def reset_from_episode(self, episode: Any, start: int = 0) -> StepInfo:
        """Prime the dream on a stored episode at frame ``start``; ``step()`` then replays its
        recorded actions and shows the recorded frames as the "real" column."""
        with self._lock:
            frames = np.asarray(episode.frames)
            start = int(np.clip(start, 0, len(frames) - 1))
            first = max(0, start - self.prime_steps + 1)
            self._close_env()
            self._replay = (episode, start)
            self._real_frame = frames[start]
            self._real_info = {}
            self._real_done = start >= len(frames) - 1
            self._real_return = float(np.sum(np.asarray(episode.rewards)[:start])) if start else 0.0
            self.controller = "replay"
            acts = [int(a) for a in np.asarray(episode.actions)[first:start]]
            return self._start(list(frames[first:start + 1]), acts, f"replaying a stored episode from frame {start}")

    def reset_from_frames(self, frames: list[np.ndarray], actions: list[int],
                          message: str = "primed on given frames") -> StepInfo:
        """Prime the dream on given uint8 frames (and the actions between them), with no real env:
        e.g. a second session that must start from exactly the same frame as another."""
        with self._lock:
            if len(frames) != len(actions) + 1:
                raise ValueError(f"need one action between consecutive frames: {len(frames)} frames, "
                                 f"{len(actions)} actions")
            self._close_env()
            self._replay = None
            self._real_frame, self._real_info, self._real_done, self._real_return = None, {}, False, 0.0
            return self._start(list(frames), [int(a) for a in actions], message)

    def step(self, action: int | None = None) -> StepInfo:
        """One dream step. ``None``: the controller picks (agent policy, recorded action in replay,
        noop for a human); an int is a human action."""
        with self._lock:
            self._require_started()
            t0 = time.perf_counter()
            action = self._choose_action(action)
            frame, reward, end_prob = self._dream.step(torch.tensor([action], device=self.bundle.device))
            return self._after_step(action, frame, float(reward[0]), float(end_prob[0]), t0)

    # Branching futures and the token inspector (app.branching): the same dream, seen from inside.
    @property
    def last_action(self) -> int:
        """The action of the last dream step; noop (0) right after a reset."""
        info = self._info
        return info.action if info is not None and info.action is not None else 0

    def branches(self, action: int | None = None, n: int = 8, temperature: float | None = None) -> list[Branch]:
        """Sample ``n`` next steps for ``action`` (None: the last step's) without moving the dream;
        ``pick_branch`` continues."""
        with self._lock:
            self._require_started()
            action = self.last_action if action is None else int(action)
            if not 0 <= action < len(self.action_names):
                raise ValueError(f"action {action} out of range 0..{len(self.action_names) - 1}")
            self._branches = (action, branching.sample_branches(self._dream, action, n, temperature))
            return self._branches[1]

    def pick_branch(self, index: int) -> StepInfo:
        """Continue the dream from branch ``index`` of the last ``branches`` call (its exact frame)."""
        with self._lock:
            if self._branches is None:
                raise ValueError("no branches to pick from: sample them first")
            action, found = self._branches
            if not 0 <= index < len(found):
                raise ValueError(f"branch must be between 0 and {len(found) - 1}, got {index}")
            t0 = time.perf_counter()
            self._choose_action(action)  # a replay ends here: the player chose the step
            frame, reward, end_prob = branching.continue_from(self._dream, action, found[index])
            return self._after_step(action, frame, reward, end_prob, t0, f"continued from branch {index + 1}")

    def inspect(self, topk: int = 5) -> Inspection:
        with self._lock:
            self._require_started()
            return branching.inspect(self._dream, topk)

    def set_token(self, position: int, token: int | None) -> Inspection:
        """Give the current frame another token at ``position`` (None: re-sample it) and decode it again."""
        with self._lock:
            self._require_started()
            view = branching.set_token(self._dream, int(position), token, self.temperature)
            self._frame = self._dream.frame.clone()
            self._history[-1] = self._frame[0]
            self._branches = None
            what = "re-sampled" if token is None else f"set to {token}"
            old = self._info
            self._make_info(old.action_name, old.reward, old.end_prob, f"token {position + 1} {what}", old.action)
            return view

    def _after_step(self, action: int, frame: torch.Tensor, reward: float, end_prob: float, t0: float,
                    msg: str = "") -> StepInfo:
        frame = frame.float().clamp(0, 1)
        self._frame = frame
        self._branches = None
        self._history.append(frame[0])
        self._actions.append(action)
        self._step += 1
        self._since_flush += 1
        self._return += reward
        msg = _join(msg, self._step_real(action))
        if end_prob > 0.5:
            msg = _join(msg, f"the dream predicts the episode ended (p={end_prob:.2f})")
        if self._since_flush >= self.horizon:
            self._prime()
            msg = _join(msg, f"memory flushed after {self.horizon} steps, re-primed from the dream's own frames")
        self._step_times.append(time.perf_counter() - t0)
        return self._make_info(self.action_names[action], reward, end_prob, msg, action)

    def set_controller(self, controller: str) -> StepInfo | None:
        with self._lock:
            if controller not in ("human", "agent"):
                raise ValueError(f"controller must be 'human' or 'agent', got {controller!r}")
            if controller == "agent" and self.bundle.actor_critic is None:
                raise VariantUnavailable("this checkpoint has no trained agent (no actor_critic weights)")
            self._replay = None  # taking over a replay: the recording no longer matches the actions
            self.controller = controller
            if controller == "agent":
                self._burn_in_agent()
            return self._remake_info(f"controller: {controller}")

    def set_agent_view(self, view: str) -> None:
        """Which frame the agent acts on: the dream's ("dream") or the shadow env's ("real")."""
        with self._lock:
            if view not in ("dream", "real"):
                raise ValueError(f"agent view must be 'dream' or 'real', got {view!r}")
            self.agent_view = view
            if self.controller == "agent":
                self._burn_in_agent()

    def set_i_tokens(self, on: bool) -> StepInfo | None:
        """Swap the world model for the variant with/without I-tokens, keeping the current frame:
        the new model is primed on the same recent dream frames."""
        with self._lock:
            on = bool(on)
            if on not in self.bundle.world_models:
                raise VariantUnavailable(self._variant_message(on))
            if on == self.i_tokens:
                return self._remake_info(f"I-tokens already {'on' if on else 'off'}")
            self.i_tokens = on
            if self._dream is not None:  # the dream re-primes the new model from its own history
                self._dream.set_world_model(self.world_model)
            return self._remake_info(f"I-tokens {'on' if on else 'off'}: world model swapped, current frame kept")

    def set_horizon(self, horizon: int) -> int:
        with self._lock:
            self.horizon = self._clamp_horizon(horizon)
            if self._info is not None:
                self._info = dataclasses.replace(self._info, horizon=self.horizon)
            return self.horizon

    def set_temperature(self, temperature: float) -> float:
        with self._lock:
            if not temperature > 0:
                raise ValueError(f"temperature must be positive, got {temperature}")
            self.temperature = float(temperature)
            if self._dream is not None:
                self._dream.temperature = self.temperature
            return self.temperature

    def set_shadow(self, on: bool) -> StepInfo | None:
        """Off: drop the real env now. On: takes effect at the next reset (a real env cannot be put
        into the dream's state)."""
        with self._lock:
            self.shadow = bool(on)
            if not on:
                self._close_env()
                self._real_frame = None
                return self._remake_info("real env off")
            return self._remake_info("real env on from the next reset")

    def start_recording(self) -> None:
        """Record from the current frame on (with :meth:`keep_last`: a clip starts here)."""
        with self._lock:
            self.recorder.start()
            if self._info is not None:
                self._record(self._info)

    def keep_last(self, steps: int) -> None:
        """Always keep the last ``steps`` steps (0: only while recording), so an export has something to
        write even when nobody started a recording; :meth:`start_recording` then marks a clip's start."""
        with self._lock:
            self.recorder.set_keep(steps)
            if steps > 0 and self._info is not None and not len(self.recorder):
                self._record(self._info)

    def stop_recording(self) -> int:
        with self._lock:
            return self.recorder.stop()

    @property
    def recording(self) -> bool:
        return self.recorder.recording

    def export_gif(self, path: str | Path, fps: float = 10, scale: int = 4, side_by_side: bool = True) -> Path:
        """Write the recorded frames (dream | real side by side, or the dream alone) as a looping GIF."""
        with self._lock:
            cols = self.recorder.span()[1]
            names = ["dream", "real"] if side_by_side and any("real" in c for c in cols) else ["dream"]
            return self.recorder.write_gif(path, names=names, fps=fps, scale=scale)

    def close(self) -> None:
        with self._lock:
            self._close_env()

    # ---------------------------------------------------------------------------- helpers
    @property
    def world_model(self) -> torch.nn.Module:
        return self.bundle.world_models[self.i_tokens]

    def _variant_message(self, on: bool) -> str:
        want = "with I-tokens" if on else "without I-tokens"
        have = ", ".join("with I-tokens" if k else "without I-tokens" for k in self.bundle.world_models)
        where = self.bundle.path or "this preset"
        return (f"{where} has no world model {want} (it has only: {have}); train with "
                f"`deltaplay train --baselines` to get both variants")

    def _clamp_horizon(self, h: int) -> int:
        return int(np.clip(int(h), 1, self.max_horizon))

    def _require_started(self) -> None:
        if self._dream is None:
            raise RuntimeError("call reset() (or reset_from_episode()) before step()")

    def _start(self, frames: list[np.ndarray], actions: list[int], message: str) -> StepInfo:
        from model.nets.imagination import DreamEnv

        dev = self.bundle.device
        if self._dream is None:
            self._dream = DreamEnv(self.bundle.tokenizer, self.world_model, temperature=self.temperature,
                                   autocast_mode=self.bundle.cfg.train.autocast)
        self._history.clear()
        self._actions.clear()
        for f in frames:
            self._history.append(to_tensor(np.array(f, np.uint8), dev))  # copy: stored episodes are read-only
        self._actions.extend(actions)
        self._frame = self._history[-1][None]
        self._step = 0
        self._return = 0.0
        self._branches = None
        self._step_times.clear()
        self._prime()
        if self.controller == "agent":
            self._burn_in_agent()
        info = self._make_info(None, 0.0, 0.0, message)
        return info

    def _prime(self) -> None:
        """(Re-)fill the dream's KV cache from the last ``prime_steps`` frames of the dream's history."""
        n = min(self.prime_steps, len(self._history))
        frames = torch.stack(list(self._history)[-n:])[None]
        acts = list(self._actions)[len(self._actions) - (n - 1):] if n > 1 else []
        actions = torch.tensor([acts], dtype=torch.long, device=self.bundle.device).reshape(1, n - 1)
        self._dream.reset(frames, actions)
        self._since_flush = 0

    def _burn_in_agent(self) -> None:
        """Reset the agent's LSTM and feed it the recent frames (as the paper's burn-in) except the
        current one, which it sees when it acts."""
        ac = self.bundle.actor_critic
        if ac is None or self._frame is None:
            return
        self._agent = Agent(ac)
        for f in list(self._history)[-self.bundle.cfg.actor_critic.burn_in - 1:-1]:
            self._agent.observe(f[None])

    def _choose_action(self, action: int | None) -> int:
        if action is not None:
            action = int(action)
            if not 0 <= action < len(self.action_names):
                raise ValueError(f"action {action} out of range 0..{len(self.action_names) - 1}")
            if self.controller == "replay":
                self._replay = None  # the player took over: the recording no longer matches
                self.controller = "human"
            return action
        if self.controller == "replay" and self._replay is not None:
            ep, t = self._replay
            if t < len(ep.actions):
                return int(np.asarray(ep.actions)[t])
            return 0
        if self.controller == "agent":
            frame = self._frame
            if self.agent_view == "real" and self._real_frame is not None and not self._real_done:
                frame = to_tensor(self._real_frame, self.bundle.device)[None]
            return int(self._agent.act(frame)[0])
        return 0  # human with no key: noop (action 0 in every env of model/envs)

    def _step_real(self, action: int) -> str:
        """Advance the shadow env or the replayed episode with the same action; returns a message."""
        if self._replay is not None:
            ep, t = self._replay
            frames = np.asarray(ep.frames)
            if t + 1 < len(frames):
                self._real_return += float(np.asarray(ep.rewards)[t])
                self._replay = (ep, t + 1)
                self._real_frame = frames[t + 1]
                self._real_done = t + 1 >= len(frames) - 1
                return "end of the recorded episode" if self._real_done else ""
            self._real_done = True
            return "end of the recorded episode"
        if self._env is None or self._real_done:
            return ""
        obs, reward, terminated, truncated, info = self._env.step(action)
        self._real_frame = np.asarray(obs, np.uint8)
        self._real_info = info
        self._real_return += float(reward)
        if terminated or truncated:
            self._real_done = True
            return "the real episode ended (Enter / reset for a new one)"
        return ""

    def _make_info(self, action_name: str | None, reward: float, end_prob: float, message: str,
                   action: int | None = None) -> StepInfo:
        dream = to_uint8(self._frame[0])
        real = self._real_frame if (self._env is not None or self._replay is not None) else None
        err = float(np.abs(dream.astype(np.int16) - real.astype(np.int16)).mean()) if real is not None else None
        ach = None
        if self._env is not None and isinstance(getattr(self, "_real_info", None), dict):
            raw = self._real_info.get("achievements")
            if raw is not None:
                ach = {k: int(v) for k, v in raw.items() if int(v) > 0}
        times = self._step_times
        fps = len(times) / sum(times) if times and sum(times) > 0 else 0.0
        pos = self._real_info.get("player_pos") if self._env is not None and real is not None else None
        self._info = StepInfo(
            step=self._step, action_name=action_name, reward=reward, end_prob=end_prob, return_=self._return,
            dream_frame=dream, real_frame=None if real is None else np.asarray(real, np.uint8).copy(),
            pixel_error=err, achievements=ach, fps=fps, i_tokens=self.i_tokens, controller=self.controller,
            message=message, horizon=self.horizon, steps_since_flush=self._since_flush,
            real_return=self._real_return if real is not None else None, real_done=self._real_done,
            action=action, real_pos=None if pos is None else (int(pos[0]), int(pos[1])))
        self._record(self._info)
        return self._info

    def _remake_info(self, message: str) -> StepInfo | None:
        if self._info is None:
            return None
        self._info = dataclasses.replace(self._info, i_tokens=self.i_tokens, controller=self.controller,
                                         horizon=self.horizon, message=message)
        return self._info

    def _record(self, info: StepInfo) -> None:
        self.recorder.add(info.step, dream=info.dream_frame, real=info.real_frame)

    def _close_env(self) -> None:
        if self._env is not None:
            try:
                self._env.close()
            finally:
                self._env = None


def _recorder():
    from app.recorder import FrameRecorder

    return FrameRecorder()


def _join(a: str, b: str) -> str:
    return f"{a}; {b}" if a and b else a or b


def set_play_threads(threads: int, device: torch.device | str = "cpu") -> int:
    """Torch threads for interactive play. ``0`` = auto: one thread on CPU, since a batch-1 dream step is
    a chain of tiny kernels that more threads slow down (they spin-wait). Returns the number in effect."""
    if threads <= 0:
        threads = 1 if torch.device(device).type == "cpu" else torch.get_num_threads()
    torch.set_num_threads(threads)
    return threads
