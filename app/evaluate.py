"""`deltaplay eval checkpoint`: measure a checkpoint on held-out data (the numbers behind the model card).

    deltaplay eval checkpoint [PATH] --episodes 20 --seed 10000 --frames 2000 --json out.json
    deltaplay eval checkpoint runs/crafter --parts recon dynamics

PATH is a checkpoint folder or a run folder (default: the bundled ``checkpoints/crafter``). Parts:

* ``recon``    - Δ-tokenizer vs the IRIS-style tokenizer (if the checkpoint has one) vs copying x_{t-1}
* ``dynamics`` - teacher-forced token accuracy and 20-step rollout pixel error, with/without I-tokens
* ``rewards``  - the world models' predicted reward and end probability on every held-out step, grouped
  by what the real env gave (positive / negative / zero reward, terminal): does the dream pay for the
  right events?
* ``agent``    - return and Crafter score of the actor-critic vs a random policy, same seeds
* ``feel``     - batch-1 dream step latency, as a player feels it
* ``keys``     - does the dream's view scroll the way the real env's does under the same move keys
  (straight walks from held-out starts, through the play engine; :mod:`model.eval.keys`)? Also for the
  real tokens decoded in a closed loop (a perfect world model), which tells the tokenizer's share of a
  miss from the world model's, and each decoded from the real previous frame (no loop). Crafter only
* ``terrain``  - what the dream's world is made of (:mod:`model.eval.terrain`): on Crafter, the terrain mix
  of the key walks' last ten steps, dream vs real (a dream that fades into grass scores badly even if it
  scrolls); on GridWorld, the share of dream frames the real env could have drawn (one agent, nothing
  that matches no object) over random walks

``recon``, ``dynamics`` and ``rewards`` share one held-out data set collected in the real env (half random policy,
half the agent, by default). The measurements live in :mod:`model.eval.parts`; this module runs them on a
checkpoint and writes the JSON, :mod:`app.eval_report` prints the tables.
"""
from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from app.eval_walks import part_keys, part_terrain

PARTS = ("recon", "dynamics", "rewards", "agent", "feel", "keys", "terrain")
COUNTS = ("episodes", "frames", "data_episodes", "segments", "horizon", "starts", "feel_steps", "batch",
          "walks", "walk_steps")  # arguments that must be at least 1


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", choices=("checkpoint",), help="checkpoint: measure a trained checkpoint")
    p.add_argument("path", nargs="?", default=None,
                   help="checkpoint or run folder (default: the bundled checkpoints/crafter)")
    p.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS, help="what to measure (default: all)")
    p.add_argument("--seed", type=int, default=10_000,
                   help="first held-out env seed (training uses 31-bit hashed seeds; collisions are skipped)")
    p.add_argument("--episodes", type=int, default=20, help="agent: real episodes per policy (>= 20 for the card)")
    p.add_argument("--max-steps", type=int, default=None,
                   help="agent: cut episodes after this many steps (default: the env's own limit)")
    p.add_argument("--frames", type=int, default=2000, help="recon/dynamics: held-out transitions to collect")
    p.add_argument("--data-episodes", type=int, default=16, help="recon/dynamics: episodes those frames come from")
    p.add_argument("--data-policy", choices=("mixed", "random", "agent"), default="mixed",
                   help="who acts while collecting held-out frames (mixed: half each; random without an agent)")
    p.add_argument("--segments", type=int, default=64, help="dynamics: teacher-forced segments")
    p.add_argument("--horizon", type=int, default=20, help="dynamics: imagined steps per rollout")
    p.add_argument("--starts", type=int, default=16, help="dynamics: rollout starts averaged")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="dynamics, keys: sampling temperature of the dream (0 = greedy)")
    p.add_argument("--feel-steps", type=int, default=50, help="feel: timed dream steps")
    p.add_argument("--walks", type=int, default=16, help="keys, terrain: walks (one held-out start each)")
    p.add_argument("--walk-steps", type=int, default=30,
                   help="keys, terrain: move keys per walk, in straight runs of 3-5 presses (Crafter; "
                        "GridWorld's terrain walks are 50 random actions)")
    p.add_argument("--batch", type=int, default=64, help="frames per tokenizer batch")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


class ProgressLine:
    """One self-overwriting status line on a terminal; a line every few seconds otherwise (logs)."""

    def __init__(self, quiet: bool = False, stream=None):
        self.quiet, self.stream = quiet, stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last, self._what = 0.0, ""

    def __call__(self, what: str, done: int, total: int) -> None:
        if self.quiet:
            return
        now = time.monotonic()
        final = done >= total
        if not final and what == self._what and now - self._last < (0.2 if self.tty else 5.0):
            return
        self._last, self._what = now, what
        text = f"  {what} {done}/{total}"
        if self.tty:
            self.stream.write("\r" + text.ljust(60) + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, file=self.stream, flush=True)


@dataclass
class EvalRun:
    """What every part reads: the arguments, the loaded checkpoint and the held-out data."""

    args: argparse.Namespace
    path: Path
    device: Any  # torch.device
    ck: Any  # model.checkpoint.LoadedCheckpoint
    progress: ProgressLine
    exclude: set[int]  # env seeds the training run used
    episodes: list | None = None  # held-out data for recon, dynamics and rewards
    walks: dict | None = None  # the key walks' frames, shared by keys and terrain


def _load(args: argparse.Namespace) -> tuple[Path, Any, Any]:
    import torch

    from app.cli import UserError
    from app.bundle import CheckpointMissing, resolve_checkpoint_path
    from model.checkpoint import CheckpointError, load_checkpoint
    from model.device import resolve_device

    try:
        path = resolve_checkpoint_path(args.path)
        device = resolve_device(args.device)
        ck = load_checkpoint(path, device=device, with_state=False)
    except (CheckpointMissing, CheckpointError, ValueError) as e:
        raise UserError(str(e)) from None
    for m in ck.models.values():
        m.eval().requires_grad_(False)
    torch.manual_seed(args.seed)
    return path, device, ck


def _agent_policy(ck):
    from model.data.policies import Agent

    ac = ck.models.get("actor_critic")
    return None if ac is None else Agent(ac)


def _collect_data(ev: EvalRun) -> tuple[list, dict[str, Any]]:
    """Held-out episodes for recon and dynamics: rounds of ``data_episodes`` envs on fresh seeds until
    ``frames`` transitions are in (episodes that end early leave room for another round; 4 at most)."""
    from model.data.envs import env_kwargs
    from model.data.policies import RandomPolicy
    from model.eval.parts import heldout_seeds, run_episodes

    args, cfg, progress = ev.args, ev.ck.cfg, ev.progress
    n = max(1, args.data_episodes)
    agent = _agent_policy(ev.ck)
    mode = args.data_policy if agent is not None else "random"
    n_agent = {"random": 0, "agent": n, "mixed": n // 2}[mode]
    kw = env_kwargs(cfg.env.name, cfg.env.max_episode_steps)
    random_policy = RandomPolicy(cfg.env.num_actions, seed=args.seed)
    # Agent-eval seeds are seed .. seed+episodes-1 (+ skips); data seeds start far above them.
    next_seed, used, episodes, total = args.seed + 100_000, [], [], 0
    for round_ in range(4):
        if total >= args.frames:
            break
        per_episode = max(1, math.ceil((args.frames - total) / n))
        seeds = heldout_seeds(next_seed, n, ev.exclude)
        next_seed, used = seeds[-1] + 1, used + seeds
        if n - n_agent:
            episodes += run_episodes(cfg.env.name, random_policy, seeds[n_agent:], max_steps=per_episode,
                                     env_kwargs=kw, progress=progress, label=f"held-out data {round_ + 1} (random)")
        if n_agent:
            episodes += run_episodes(cfg.env.name, agent, seeds[:n_agent], max_steps=per_episode, env_kwargs=kw,
                                     progress=progress, label=f"held-out data {round_ + 1} (agent)")
        total = sum(e.length for e in episodes)
    info = {"episodes": len(episodes), "transitions": int(total), "policy": mode,
            "agent_episodes": n_agent * (len(used) // n), "seeds": [int(s) for s in used]}
    return episodes, info


def part_recon(ev: EvalRun) -> dict[str, Any]:
    from model.eval.parts import copy_errors, error_summary, reconstruction_errors, tokenizer_facts

    args, ck, episodes = ev.args, ev.ck, ev.episodes
    out: dict[str, Any] = {}
    main_kind = ck.models["tokenizer"].kind
    names = [("tokenizer", main_kind)]
    if "iris_tokenizer" in ck.models:
        names.append(("iris_tokenizer", "iris" if main_kind != "iris" else "iris_baseline"))
    for model_name, label in names:
        tok = ck.models[model_name]
        mse = reconstruction_errors(tok, episodes, batch=args.batch, max_count=args.frames, device=ev.device,
                                    progress=ev.progress, label=f"recon ({label})")
        out[label] = {**tokenizer_facts(tok), **error_summary(mse)}
    out["copy_prev"] = {"kind": "copy x_{t-1}", "bits_per_frame": 0.0,
                        **error_summary(copy_errors(episodes, max_count=args.frames))}
    return out


def _world_models(ck) -> dict[str, Any]:
    """The checkpoint's world models by what they are: i_tokens / no_i_tokens / iris."""
    wms = {}
    for name in ("world_model", "world_model_no_itok"):
        if name in ck.models:
            wm = ck.models[name]
            label = "iris" if wm.layout == "iris" else ("i_tokens" if wm.i_tokens else "no_i_tokens")
            wms.setdefault(label, wm)
    return wms


def part_rewards(ev: EvalRun) -> dict[str, Any]:
    from model.eval.parts import reward_predictions

    return {label: reward_predictions(ev.ck.models["tokenizer"], wm, ev.episodes, batch=max(1, ev.args.batch // 4),
                                      device=ev.device, progress=ev.progress, label=f"rewards ({label})")
            for label, wm in _world_models(ev.ck).items()}


def part_dynamics(ev: EvalRun) -> dict[str, Any]:
    from model.eval.parts import (copy_rollout_errors, rollout_errors, rollout_summary, rollout_windows,
                                  token_accuracy)

    args, ck, episodes, device, progress = ev.args, ev.ck, ev.episodes, ev.device, ev.progress
    tok = ck.models["tokenizer"]
    wms = _world_models(ck)
    out: dict[str, Any] = {"token_accuracy": {}, "rollout": {}}
    for label, wm in wms.items():
        out["token_accuracy"][label] = token_accuracy(tok, wm, episodes, max_segments=args.segments,
                                                      batch=max(1, args.batch // 4), device=device,
                                                      progress=progress, label=f"token accuracy ({label})")
    context = max(1, min(ck.cfg.actor_critic.burn_in, ck.cfg.world_model.max_steps - 1))  # as the play engine
    horizon = min(args.horizon, max(e.length for e in episodes) - context + 1)
    windows = rollout_windows(episodes, context, horizon, args.starts, seed=args.seed)
    if not windows or horizon < 1:
        out["rollout"] = {"error": f"no held-out episode has {context} + {args.horizon} steps; collect more --frames"}
        return out
    out["rollout"] = {"horizon": horizon, "context": context, "temperature": args.temperature,
                      "starts": len(windows)}
    for label, wm in wms.items():
        mse = rollout_errors(tok, wm, windows, context, horizon, temperature=args.temperature, seed=args.seed,
                             batch=args.starts, device=device, progress=progress, label=f"rollouts ({label})")
        out["rollout"][label] = rollout_summary(mse)
    out["rollout"]["copy_start"] = rollout_summary(copy_rollout_errors(windows, horizon))
    return out


def part_agent(ev: EvalRun) -> dict[str, Any]:
    import torch

    from model.data.envs import env_kwargs
    from model.data.policies import RandomPolicy
    from model.eval.parts import episode_stats, heldout_seeds, run_episodes

    args, cfg, progress = ev.args, ev.ck.cfg, ev.progress
    seeds = heldout_seeds(args.seed, args.episodes, ev.exclude)
    kw = env_kwargs(cfg.env.name, cfg.env.max_episode_steps)
    out: dict[str, Any] = {"episodes": len(seeds), "seeds": seeds, "max_steps": args.max_steps,
                           "env_length_limit": kw.get("length")}
    agent = _agent_policy(ev.ck)
    if agent is not None:
        torch.manual_seed(args.seed)
        eps = run_episodes(cfg.env.name, agent, seeds, max_steps=args.max_steps, env_kwargs=kw,
                           progress=progress, label="agent episodes")
        out["agent"] = episode_stats(eps)
    else:
        out["agent"] = {"error": "this checkpoint has no actor_critic weights"}
    eps = run_episodes(cfg.env.name, RandomPolicy(cfg.env.num_actions, seed=args.seed), seeds,
                       max_steps=args.max_steps, env_kwargs=kw, progress=progress, label="random episodes")
    out["random"] = episode_stats(eps)
    return out


def part_feel(ev: EvalRun) -> dict[str, Any]:
    """Batch-1 dream steps with the play engine's thread setting (1 thread on CPU unless --threads)."""
    import torch

    from app.bench import benchmark_dream
    from app.engine import set_play_threads

    args = ev.args
    before = torch.get_num_threads()
    threads = set_play_threads(args.threads, ev.device)
    try:
        res = benchmark_dream(ev.path, steps=max(1, args.feel_steps), device=str(ev.device), seed=args.seed)
    finally:
        torch.set_num_threads(before)
    return {**res, "threads": threads}


PART_RUNS: dict[str, Callable[[EvalRun], dict[str, Any]]] = {
    "recon": part_recon, "dynamics": part_dynamics, "rewards": part_rewards, "agent": part_agent,
    "feel": part_feel, "keys": part_keys, "terrain": part_terrain}


def _check_counts(args: argparse.Namespace) -> None:
    from app.cli import UserError

    for name in COUNTS:
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    if args.max_steps is not None and args.max_steps < 1:
        raise UserError("--max-steps must be at least 1")


def _header(ev: EvalRun, store: Path | None) -> dict[str, Any]:
    """The facts a reader needs to reproduce the figures: what was measured, where and on which seeds."""
    import torch

    cfg = ev.ck.cfg
    return {
        "checkpoint": str(ev.path), "env": cfg.env.name, "preset": cfg.preset, "device": str(ev.device),
        "torch": torch.__version__, "python": platform.python_version(), "threads": torch.get_num_threads(),
        "seed": ev.args.seed, "parts": list(ev.args.parts),
        "heldout": {"training_store": str(store) if store else None, "training_seeds_seen": len(ev.exclude),
                    "note": ("seeds used by the run's stored episodes were skipped" if store else
                             "no training store beside this checkpoint; training seeds are 31-bit hashes, "
                             "so small consecutive seeds are held out with near certainty")},
        "timings_s": {},
    }


def run(args: argparse.Namespace) -> int:
    evaluate(args)
    return 0


def evaluate_words(*words: str) -> dict[str, Any]:
    """``deltaplay eval`` in this process, from its command-line words: the one way the stage and the experiments
    evaluate, so they take its defaults and checks."""
    p = argparse.ArgumentParser()
    add_arguments(p)
    return evaluate(p.parse_args(list(words)))


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Measure, print the report, write ``--json``; the result (what the JSON holds)."""
    import torch

    from app.bundle import store_of
    from app.eval_report import format_report
    from model.eval.parts import used_seeds

    if args.threads:
        torch.set_num_threads(args.threads)
    _check_counts(args)
    progress = ProgressLine(args.quiet)
    path, device, ck = _load(args)
    store = store_of(path)
    ev = EvalRun(args, path, device, ck, progress, used_seeds(store))
    progress.say(f"evaluating {path} ({ck.cfg.env.name}, preset {ck.cfg.preset}) on {device}; "
                 f"parts: {' '.join(args.parts)}")
    result = _header(ev, store)
    if {"recon", "dynamics", "rewards"} & set(args.parts):
        progress.say("collecting held-out episodes in the real env ...")
        t0 = time.perf_counter()
        ev.episodes, result["data"] = _collect_data(ev)
        result["timings_s"]["data"] = round(time.perf_counter() - t0, 2)
    for part in (p for p in PARTS if p in args.parts):
        progress.say(f"[{part}]")
        t0 = time.perf_counter()
        result[part] = PART_RUNS[part](ev)
        result["timings_s"][part] = round(time.perf_counter() - t0, 2)
    print(format_report(result))
    if args.json:
        from model.train.run_dir import write_json

        print(f"wrote {write_json(args.json, result)}")
    return result
