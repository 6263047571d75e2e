"""`deltaplay eval`: measure a checkpoint on held-out data (the numbers behind the model card).

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
  miss from the world model's, and for each world model dreaming one step at a time from the real frames
  (``*_one_step``), which tells its choice at each step from its errors compounding. Crafter only

``recon``, ``dynamics`` and ``rewards`` share one held-out data set collected in the real env (half random policy,
half the agent, by default). The measurements live in :mod:`model.eval.parts`; this module loads,
prints and writes JSON. ``deltaplay eval tokenizers`` hands over to ``experiments.tokenizer_budget.run``.
"""
from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

PARTS = ("recon", "dynamics", "rewards", "agent", "feel", "keys")
WHAT = ("checkpoint", "tokenizers")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", choices=WHAT, help="checkpoint: measure a trained checkpoint; tokenizers: the "
                   "tokenizer experiment (experiments/tokenizer_budget/run.py)")
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
    p.add_argument("--walks", type=int, default=16, help="keys: walks (one held-out start each)")
    p.add_argument("--walk-steps", type=int, default=20,
                   help="keys: move keys per walk, in straight runs of 3-5 presses")
    p.add_argument("--batch", type=int, default=64, help="frames per tokenizer batch")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    t = p.add_argument_group("tokenizers (the experiment; --seed/--frames/--data-episodes: held-out data, "
                             "--batch: eval batch, --threads 0 = 1 thread)")
    t.add_argument("--minutes", type=float, default=120.0, help="training budget per model, on its own clock")
    t.add_argument("--steps", type=int, default=0, help="cap on training steps per model (0 = none)")
    t.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                   help="budget clock: process CPU time in the model's steps (robust to load) or wall time")
    t.add_argument("--schedule", choices=("interleaved", "sequential"), default="interleaved",
                   help="one step per model in turn, or one model after another")
    t.add_argument("--models", nargs="+", choices=("cpu", "paper", "iris"), default=["cpu", "paper", "iris"],
                   help="which tokenizers to train (cpu is required)")
    t.add_argument("--width", type=int, default=None, help="conv base width of every model (default: cpu preset, 32)")
    t.add_argument("--train-batch", type=int, default=0, help="pairs per training step (0 = cpu preset's, 32)")
    t.add_argument("--train-frames", type=int, default=50_000, help="training transitions (random policy)")
    t.add_argument("--train-seed", type=int, default=0, help="first training env seed (must stay below --seed)")
    t.add_argument("--episode-steps", type=int, default=250, help="training episodes are cut after this many steps")
    t.add_argument("--data-dir", default="runs/tokenizer_data", help="cache of collected transitions (.npz)")
    t.add_argument("--out-dir", default="runs/tokenizer_experiment", help="checkpoints and worst_frames.png")
    t.add_argument("--worst", type=int, default=8, help="frames in worst_frames.png")
    t.add_argument("--curve-every", type=float, default=10.0,
                   help="held-out learning-curve point every this many budget minutes per model (0 = off)")
    t.add_argument("--curve-frames", type=int, default=256, help="held-out transitions per learning-curve point")
    t.add_argument("--eval-only", action="store_true", help="re-evaluate the checkpoints in --out-dir")


def run(args: argparse.Namespace) -> int:
    if args.what == "tokenizers":
        return run_tokenizers(args)
    return run_checkpoint(args)


def run_tokenizers(args: argparse.Namespace) -> int:
    """Hook for the tokenizer experiment, which lives in its own module."""
    from app.cli import UserError

    try:
        import experiments.tokenizer_budget.run as experiment
    except ModuleNotFoundError as e:
        if e.name != "experiments.tokenizer_budget.run":
            raise
        raise UserError("the tokenizer experiment is not part of this version (experiments/tokenizer_budget/run.py "
                        "is missing); `deltaplay eval checkpoint` measures a trained checkpoint") from None
    return int(experiment.main(args) or 0)


# -------------------------------------------------------------------------------------- progress

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


# ------------------------------------------------------------------------------------------ parts

def _load(args: argparse.Namespace):
    import torch

    from app.cli import UserError
    from app.engine import CheckpointMissing, resolve_checkpoint_path
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


def _agent_policy(ck, device):
    from model.train.loop import AgentPolicy

    ac = ck.models.get("actor_critic")
    if ac is None:
        return None
    return AgentPolicy(ac, device, ck.cfg.actor_critic.temperature, ck.cfg.actor_critic.burn_in)


def _collect_data(args, ck, device, progress: ProgressLine, exclude: set[int]) -> tuple[list, dict[str, Any]]:
    """Held-out episodes for recon and dynamics: rounds of ``data_episodes`` envs on fresh seeds until
    ``frames`` transitions are in (episodes that end early leave room for another round; 4 at most)."""
    from model.data.collector import RandomPolicy
    from model.eval.parts import env_kwargs_for, heldout_seeds, run_episodes

    cfg = ck.cfg
    n = max(1, args.data_episodes)
    agent = _agent_policy(ck, device)
    mode = args.data_policy if agent is not None else "random"
    n_agent = {"random": 0, "agent": n, "mixed": n // 2}[mode]
    kw = env_kwargs_for(cfg.env.name, cfg.env.max_episode_steps)
    random_policy = RandomPolicy(cfg.env.num_actions, seed=args.seed)
    # Agent-eval seeds are seed .. seed+episodes-1 (+ skips); data seeds start far above them.
    next_seed, used, episodes, total = args.seed + 100_000, [], [], 0
    for round_ in range(4):
        if total >= args.frames:
            break
        per_episode = max(1, math.ceil((args.frames - total) / n))
        seeds = heldout_seeds(next_seed, n, exclude)
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


def part_recon(args, ck, device, episodes, progress: ProgressLine) -> dict[str, Any]:
    from model.eval.parts import copy_errors, error_summary, reconstruction_errors, tokenizer_facts

    out: dict[str, Any] = {}
    main_kind = ck.models["tokenizer"].kind
    names = [("tokenizer", main_kind)]
    if "iris_tokenizer" in ck.models:
        names.append(("iris_tokenizer", "iris" if main_kind != "iris" else "iris_baseline"))
    for model_name, label in names:
        tok = ck.models[model_name]
        mse = reconstruction_errors(tok, episodes, batch=args.batch, max_count=args.frames, device=device,
                                    progress=progress, label=f"recon ({label})")
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


def part_rewards(args, ck, device, episodes, progress: ProgressLine) -> dict[str, Any]:
    from model.eval.parts import reward_predictions

    return {label: reward_predictions(ck.models["tokenizer"], wm, episodes, batch=max(1, args.batch // 4),
                                      device=device, progress=progress, label=f"rewards ({label})")
            for label, wm in _world_models(ck).items()}


def part_dynamics(args, ck, device, episodes, progress: ProgressLine) -> dict[str, Any]:
    from model.eval.parts import (copy_rollout_errors, rollout_errors, rollout_summary, rollout_windows,
                                  token_accuracy)

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


def part_agent(args, ck, device, progress: ProgressLine, exclude: set[int]) -> dict[str, Any]:
    import torch

    from model.data.collector import RandomPolicy
    from model.eval.parts import env_kwargs_for, episode_stats, heldout_seeds, run_episodes

    cfg = ck.cfg
    seeds = heldout_seeds(args.seed, args.episodes, exclude)
    kw = env_kwargs_for(cfg.env.name, cfg.env.max_episode_steps)
    out: dict[str, Any] = {"episodes": len(seeds), "seeds": seeds, "max_steps": args.max_steps,
                           "env_length_limit": kw.get("length")}
    agent = _agent_policy(ck, device)
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


def part_feel(args, path: Path, device) -> dict[str, Any]:
    """Batch-1 dream steps with the play engine's thread setting (1 thread on CPU unless --threads)."""
    import torch

    from app.engine import benchmark_dream, set_play_threads

    before = torch.get_num_threads()
    threads = set_play_threads(args.threads, device)
    try:
        res = benchmark_dream(path, steps=max(1, args.feel_steps), device=str(device), seed=args.seed)
    finally:
        torch.set_num_threads(before)
    return {**res, "threads": threads}


def part_keys(args, path: Path, device, progress: ProgressLine, exclude: set[int]) -> dict[str, Any]:
    """Walk the dream with move keys beside the real env (the play engine's shadow, same start and keys)
    and score each step's view motion (:mod:`model.eval.keys`), for each world model of the checkpoint."""
    import numpy as np

    from app.engine import ModelBundle, PlaySession
    from model.data.envs import action_names
    from model.eval.parts import heldout_seeds
    from model.eval.keys import (WalkJudge, agreement, follow_rate, follows_keys, geometry_for, score_walk,
                                   walk_keys)

    bundle = ModelBundle.load(path, device=str(device))
    try:
        view = geometry_for(bundle.env_name)
    except ValueError as e:
        return {"error": str(e)}
    names = action_names(bundle.env_name)
    seeds = heldout_seeds(args.seed, args.walks, exclude)
    out: dict[str, Any] = {"walks": len(seeds), "steps": args.walk_steps, "seeds": [seeds[0], seeds[-1]],
                           "temperature": args.temperature}
    walks: dict[str, list[tuple[list[np.ndarray], list[np.ndarray]]]] = {}  # variant -> [(real, dream frames)]
    keys = {seed: walk_keys(seed, args.walk_steps) for seed in seeds}
    for i_tokens in sorted(bundle.world_models, reverse=True):
        name = "i_tokens" if i_tokens else "no_i_tokens"
        walks[name] = []
        for w, seed in enumerate(seeds):
            session = PlaySession(bundle, shadow=True, seed=seed, temperature=args.temperature, i_tokens=i_tokens)
            try:
                infos = [session.reset(seed)] + [session.step(session.action_names.index(k)) for k in keys[seed]]
            finally:
                session.close()
            walks[name].append(([i.real_frame for i in infos], [i.dream_frame for i in infos]))
            progress(f"keys ({name})", w + 1, len(seeds))
    reals = [real for real, _ in next(iter(walks.values()))]  # the same in every variant
    # A perfect world model: the real tokens of the same walks, each decoded from the previous decoded frame.
    if getattr(bundle.tokenizer, "kind", None) == "delta":
        import torch

        from experiments.decoder_tuning.tune import closed_loop
        from model.data.frames import to_tensor, to_uint8

        walks["real_tokens"] = []
        for seed, real in zip(seeds, reals):
            acts = torch.tensor([[names.index(k) for k in keys[seed]]], device=bundle.device)
            frames = to_tensor(np.stack(real), bundle.device)[None]
            decoded = to_uint8(closed_loop(bundle.tokenizer, frames, acts)[0])
            walks["real_tokens"].append((real, [real[0]] + list(decoded)))
    # One step at a time from the real frames before it: the world model's choice at each step, without its
    # own earlier errors compounding. Run last, so the closed-loop dreams above draw the same samples as before.
    one_step: set[str] = set()  # variants whose step t starts from the real frame t
    for i_tokens in sorted(bundle.world_models, reverse=True):
        name = ("i_tokens" if i_tokens else "no_i_tokens") + "_one_step"
        walks[name] = []
        one_step.add(name)
        for w, (seed, real) in enumerate(zip(seeds, reals)):
            acts = [names.index(k) for k in keys[seed]]
            session = PlaySession(bundle, shadow=False, seed=seed, temperature=args.temperature, i_tokens=i_tokens)
            try:
                dreamt = []
                for t, a in enumerate(acts):
                    session.reset_from_frames(real[:t + 1], acts[:t])
                    dreamt.append(session.step(a).dream_frame)
            finally:
                session.close()
            walks[name].append((real, [real[0]] + dreamt))
            progress(f"keys ({name})", w + 1, len(seeds))
    for name, pairs in walks.items():
        scored = [score_walk(real, dream, keys[seed], view, real[:-1] if name in one_step else None)
                  for seed, (real, dream) in zip(seeds, pairs)]
        out[name] = {**agreement([t for triples, _ in scored for t in triples]),
                     "ambiguous": sum(n for _, n in scored)}
    # The same walks judged in their own world: scroll where the frame's own tile ahead is walkable, else hold.
    judge = WalkJudge.collect(bundle.env_name, heldout_seeds(args.seed + 10_000, 8, exclude), 100, view)
    own: dict[str, Any] = {}
    for name, frames in [("real_env", reals)] + [(n, [d for _, d in p]) for n, p in walks.items() if n not in one_step]:
        steps = [follows_keys(f, keys[seed], judge) for seed, f in zip(seeds, frames)]
        own[name] = follow_rate([s for walk, _ in steps for s in walk], sum(n for _, n in steps))
    out["own_world"] = own
    return out


# ------------------------------------------------------------------------------------------- run

def run_checkpoint(args: argparse.Namespace) -> int:
    import torch

    from model.eval.parts import used_seeds

    if args.threads:
        torch.set_num_threads(args.threads)
    from app.cli import UserError

    for name in ("episodes", "frames", "data_episodes", "segments", "horizon", "starts", "feel_steps", "batch",
                 "walks", "walk_steps"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    if args.max_steps is not None and args.max_steps < 1:
        raise UserError("--max-steps must be at least 1")
    progress = ProgressLine(args.quiet)
    path, device, ck = _load(args)
    cfg = ck.cfg
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else None
    store = run_dir / "store" if run_dir is not None and (run_dir / "store").is_dir() else None
    exclude = used_seeds(store)
    progress.say(f"evaluating {path} ({cfg.env.name}, preset {cfg.preset}) on {device}; parts: {' '.join(args.parts)}")
    result: dict[str, Any] = {
        "checkpoint": str(path), "env": cfg.env.name, "preset": cfg.preset, "device": str(device),
        "torch": torch.__version__, "python": platform.python_version(), "threads": torch.get_num_threads(),
        "seed": args.seed, "parts": list(args.parts),
        "heldout": {"training_store": str(store) if store else None, "training_seeds_seen": len(exclude),
                    "note": ("seeds used by the run's stored episodes were skipped" if store else
                             "no training store beside this checkpoint; training seeds are 31-bit hashes, "
                             "so small consecutive seeds are held out with near certainty")},
        "timings_s": {},
    }
    episodes = None
    if {"recon", "dynamics", "rewards"} & set(args.parts):
        progress.say("collecting held-out episodes in the real env ...")
        t0 = time.perf_counter()
        episodes, result["data"] = _collect_data(args, ck, device, progress, exclude)
        result["timings_s"]["data"] = round(time.perf_counter() - t0, 2)
    for part in PARTS:
        if part not in args.parts:
            continue
        progress.say(f"[{part}]")
        t0 = time.perf_counter()
        if part == "recon":
            result["recon"] = part_recon(args, ck, device, episodes, progress)
        elif part == "dynamics":
            result["dynamics"] = part_dynamics(args, ck, device, episodes, progress)
        elif part == "rewards":
            result["rewards"] = part_rewards(args, ck, device, episodes, progress)
        elif part == "agent":
            result["agent"] = part_agent(args, ck, device, progress, exclude)
        elif part == "feel":
            result["feel"] = part_feel(args, path, device)
        else:
            result["keys"] = part_keys(args, path, device, progress, exclude)
        result["timings_s"][part] = round(time.perf_counter() - t0, 2)
    print(format_report(result))
    if args.json:
        from model.train.run_dir import write_json

        print(f"wrote {write_json(args.json, result)}")
    return 0


# ----------------------------------------------------------------------------------------- table

def _f(x: Any, digits: int = 2) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        if math.isinf(x) or math.isnan(x):
            return str(x)
        return f"{x:.{digits}f}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"
    return str(x)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    cells = [header] + [[_f(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join("  " + s for s in lines)


def format_report(r: dict[str, Any]) -> str:
    """The results as text tables (the JSON has everything, per step and per achievement)."""
    out = [f"\nΔ-IRIS checkpoint evaluation: {r['checkpoint']}",
           f"env {r['env']}, preset {r['preset']}, device {r['device']}, {r['threads']} threads, "
           f"first seed {r['seed']}"]
    if "data" in r:
        d = r["data"]
        out.append(f"held-out data: {d['transitions']} transitions from {d['episodes']} episodes "
                   f"(policy: {d['policy']}, seeds {d['seeds'][0]}..{d['seeds'][-1]})")
    if "recon" in r:
        rows = [[name, v.get("tokens_per_frame", 0), v["bits_per_frame"], f"{v['mse_mean']:.5f}", v["psnr_mean"],
                 v["psnr_median"], v["psnr_worst1pct"], v["psnr_of_mean_mse"]] for name, v in r["recon"].items()]
        out += ["", "Reconstruction of x_t (PSNR in dB; worst 1% = PSNR of the mean MSE of the worst 1% frames)",
                _table(["tokenizer", "K", "bits/frame", "MSE", "PSNR mean", "median", "worst 1%", "of mean MSE"], rows)]
    if "dynamics" in r:
        dyn = r["dynamics"]
        rows = [[k, v["accuracy"], v["majority_accuracy"], v["cross_entropy"], v["segments"], v["steps"]]
                for k, v in dyn["token_accuracy"].items()]
        out += ["", "World model, teacher-forced next-token accuracy on held-out segments",
                _table(["world model", "accuracy", "majority", "CE (nats)", "segments", "steps"], rows)]
        ro = dyn["rollout"]
        if "error" in ro:
            out.append(f"  rollouts: {ro['error']}")
        else:
            h = ro["horizon"]
            marks = sorted({1, min(5, h), min(10, h), h})
            rows = [[k] + [v["psnr_per_step"][m - 1] for m in marks] + [f"{v['mse_mean']:.5f}"]
                    for k, v in ro.items() if isinstance(v, dict)]
            out += ["", f"Imagined vs real frames, same actions ({ro['starts']} starts, context {ro['context']}, "
                        f"temperature {ro['temperature']}): PSNR in dB at step",
                    _table(["rollout"] + [f"step {m}" for m in marks] + ["MSE mean"], rows)]
    if "rewards" in r:
        rows = []
        for k, v in r["rewards"].items():
            for outcome in ("positive", "negative", "zero", "terminal"):
                g = v[outcome]
                rows.append([k, outcome, g["steps"], g["predicted_reward"], g["end_probability"]])
        out += ["", "World model, teacher-forced reward and end predictions on held-out steps, by the real outcome",
                _table(["world model", "real step", "steps", "mean predicted reward", "mean end prob."], rows)]
    if "agent" in r:
        a = r["agent"]
        rows = []
        for k in ("agent", "random"):
            v = a.get(k, {})
            if "error" in v:
                rows.append([k, v["error"], "", "", "", ""])
            else:
                rows.append([k, v["return_mean"], v["return_std"], v["length_mean"], v.get("crafter_score"),
                             v["cut_by_max_steps"]])
        limit = a["env_length_limit"]
        cap = a["max_steps"] or (f"env limit {limit}" if limit else "the env's own limit")
        out += ["", f"Agent in the real env: {a['episodes']} episodes per policy on the same seeds (max steps: {cap})",
                _table(["policy", "return", "std", "length", "Crafter score", "cut"], rows)]
        rates = a.get("agent", {}).get("success_rates")
        if rates:
            rnd = a["random"].get("success_rates", {})
            top = sorted(rates, key=lambda n: -rates[n])
            out.append("  success rates % (agent / random): " + ", ".join(
                f"{n} {rates[n]:.0f}/{rnd.get(n, 0):.0f}" for n in top if rates[n] > 0 or rnd.get(n, 0) > 0))
    if "feel" in r:
        f = r["feel"]
        out += ["", f"Feel: one dream step at batch 1: {f['ms_per_step']:.1f} ms = {f['steps_per_s']:.1f} steps/s "
                    f"({f['device']}, {f['threads']} threads, {f['steps']} steps)"]
    if "keys" in r and "error" in r["keys"]:
        out += ["", f"Dream under the move keys: {r['keys']['error']}"]
    elif "keys" in r:
        k = r["keys"]
        rows = [[name, v["agreement"], v["pairs"], v["ambiguous"], v["still_baseline"], v["key_baseline"]]
                + [v["per_motion"].get(m, {}).get("same") for m in ("left", "right", "up", "down", "none")]
                for name, v in k.items() if isinstance(v, dict) and "agreement" in v]
        out += ["", f"Dream under the move keys: does the view scroll as the real one does? ({k['walks']} walks of "
                    f"{k['steps']} keys, temperature {k['temperature']}; real_tokens: the real tokens decoded in a "
                    "closed loop, a perfect world model; *_one_step: each step dreamed from the real frames before it, "
                    "so errors do not compound; baselines: a dream that never scrolls, one that always "
                    "follows the key)",
                _table(["world model", "agreement", "pairs", "ambiguous", "never", "always", "left", "right", "up",
                        "down", "none"], rows)]
        if "own_world" in k:
            own = [[name, v["follows"], v["pairs"], v["ambiguous"], v["scrolls_when_walkable"], v["holds_when_blocked"],
                    v["walkable_share"]] for name, v in k["own_world"].items()]
            out += ["", "The same walks in their own world: does the view scroll exactly when the frame's own tile ahead "
                        "is walkable? (a nearest-tile judge trained on real tiles labelled by the env; real_env: the "
                        "judge's check)",
                    _table(["frames", "follows", "pairs", "ambiguous", "scrolls if walkable", "holds if blocked",
                            "walkable"], own)]
    out.append("timings (s): " + ", ".join(f"{k} {v}" for k, v in r["timings_s"].items()))
    return "\n".join(out)
