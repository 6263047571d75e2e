"""`deltaplay export-gif`: roll a world model out from a real start and write a looping GIF.

Columns, left to right: the dream (with I-tokens), optionally the dream of the model *without*
I-tokens fed the very same actions (``--compare-i-tokens``), optionally the real env stepped with those
actions (``--side-by-side``). A rollout of N steps gives N + 1 GIF frames (the start frame, then one per
step); the footer shows the step number and progress.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Sequence

import numpy as np

import app  # noqa: F401  (no-telemetry environment)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", default=None,
                   help="checkpoint folder or run folder (default: the bundled checkpoints/crafter)")
    p.add_argument("--out", default="gifs/rollout.gif",
                   help="GIF to write (default: ./gifs/rollout.gif, in the gifs/ folder of the current folder)")
    p.add_argument("--steps", type=int, default=100, help="dream steps (the GIF has steps + 1 frames)")
    p.add_argument("--policy", default="auto", choices=("auto", "agent", "random"),
                   help="who acts: the trained agent, uniform random actions, or auto (agent if the "
                        "checkpoint has one); --actions overrides")
    p.add_argument("--actions", default=None,
                   help="file of actions (indices or names, separated by spaces, commas or newlines)")
    p.add_argument("--side-by-side", action="store_true", help="add the real env, stepped with the same actions")
    p.add_argument("--compare-i-tokens", action="store_true",
                   help="add the world model without I-tokens, fed the same actions")
    p.add_argument("--branches", type=int, default=0,
                   help="instead: N futures of the dream side by side, all from the same start and fed the "
                        "same actions, each sampling its own tokens (what the world model holds open)")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--fps", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=0, help="real env seed of the start frame (and random actions)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--horizon", type=int, default=None, help="dream steps before the memory is re-primed")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads (0 = auto: 1 on CPU, where a batch-1 dream gains nothing from more)")


def run(args: argparse.Namespace) -> int:
    from app.cli import UserError
    from app.engine import CheckpointMissing, VariantUnavailable, set_play_threads
    from model.checkpoint import CheckpointError
    from model.device import resolve_device

    if args.steps < 1 or args.scale < 1 or args.fps <= 0:
        raise UserError("--steps and --scale must be >= 1 and --fps > 0")
    policy: str | list[int] = args.policy
    try:
        set_play_threads(args.threads, resolve_device(args.device))
        if args.actions:
            policy = read_actions(args.actions)
        if args.branches:
            if args.side_by_side or args.compare_i_tokens:
                raise UserError("--branches shows dream futures only: drop --side-by-side / --compare-i-tokens")
            path, n = export_branches_gif(args.out, checkpoint=args.checkpoint, n=args.branches, steps=args.steps,
                                          policy=policy, scale=args.scale, fps=args.fps, seed=args.seed,
                                          temperature=args.temperature, device=args.device)
            print(f"wrote {n} frames of {args.branches} futures ({args.fps:g} fps) to {path}")
            return 0
        path, n = export_rollout_gif(
            args.out, checkpoint=args.checkpoint, steps=args.steps, policy=policy,
            side_by_side=args.side_by_side, compare_i_tokens=args.compare_i_tokens, scale=args.scale,
            fps=args.fps, seed=args.seed, temperature=args.temperature, horizon=args.horizon,
            device=args.device, return_count=True)
    except (CheckpointMissing, CheckpointError, VariantUnavailable, FileNotFoundError, ValueError) as e:
        raise UserError(str(e)) from None
    print(f"wrote {n} frames ({args.fps:g} fps) to {path}")
    return 0


def read_actions(path: str | Path) -> list[str | int]:
    """Actions from a text file: indices or action names, separated by whitespace or commas;
    ``#`` starts a comment. Names are resolved against the env once the checkpoint is known."""
    text = Path(path).read_text(encoding="utf-8")
    text = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    items = [t for t in re.split(r"[\s,]+", text) if t]
    if not items:
        raise ValueError(f"{path}: no actions in the file")
    return [int(t) if t.lstrip("-").isdigit() else t for t in items]


def _resolve_actions(items: Sequence[str | int], names: list[str]) -> list[int]:
    index = {n.lower(): i for i, n in enumerate(names)}
    out = []
    for t in items:
        if isinstance(t, (int, np.integer)):
            a = int(t)
        elif str(t).lower() in index:
            a = index[str(t).lower()]
        else:
            raise ValueError(f"unknown action {t!r}; this env's actions are: {', '.join(names)}")
        if not 0 <= a < len(names):
            raise ValueError(f"action {a} out of range 0..{len(names) - 1}")
        out.append(a)
    return out


def _named_policy(policy: str | Sequence[str | int], bundle) -> str | Sequence[str | int]:
    """"auto" -> "agent" when the checkpoint has one, else "random"; an unknown name is refused; a list passes."""
    if policy == "auto":
        return "agent" if bundle.actor_critic is not None else "random"
    if isinstance(policy, str) and policy not in ("agent", "random"):
        raise ValueError(f"policy must be 'agent', 'random', 'auto' or a list of actions, got {policy!r}")
    return policy


def export_rollout_gif(out: str | Path, checkpoint=None, steps: int = 100,
                       policy: str | Sequence[str | int] = "auto", side_by_side: bool = True,
                       compare_i_tokens: bool = False, scale: int = 4, fps: float = 10.0, seed: int = 0,
                       temperature: float = 1.0, horizon: int | None = None, device: str = "auto",
                       return_count: bool = False):
    """Roll out ``steps`` dream steps from a real start (env seed ``seed``) and write a GIF.

    ``checkpoint``: a :class:`~app.engine.ModelBundle`, a checkpoint/run folder, or None (bundled).
    ``policy``: "agent", "random", "auto" or a sequence of actions (indices or names; when shorter than
    ``steps`` it repeats). Returns the GIF path (and the frame count with ``return_count``)."""
    from app.engine import ModelBundle, PlaySession, VariantUnavailable
    from app.recorder import FrameRecorder

    bundle = checkpoint if isinstance(checkpoint, ModelBundle) else ModelBundle.load(checkpoint, device=device)
    if compare_i_tokens and not (True in bundle.world_models and False in bundle.world_models):
        have = "with" if True in bundle.world_models else "without"
        raise VariantUnavailable(f"--compare-i-tokens needs world models with and without I-tokens; "
                                 f"{bundle.path or 'this model'} only has one {have} I-tokens (train with "
                                 f"`deltaplay train --baselines`)")
    main = PlaySession(bundle, shadow=side_by_side, seed=seed, temperature=temperature, horizon=horizon,
                       i_tokens=True if compare_i_tokens else None)
    info = main.reset(seed=seed)
    other = None
    if compare_i_tokens:
        other = PlaySession(bundle, shadow=False, seed=seed, temperature=temperature, horizon=horizon,
                            i_tokens=False)
        other.reset_from_frames([info.dream_frame], [])

    policy = _named_policy(policy, bundle)
    rng = np.random.default_rng(seed)
    if isinstance(policy, str):
        if policy == "agent":
            main.set_controller("agent")
        actions = None
    else:
        actions = _resolve_actions(list(policy), main.action_names)
        if not actions:
            raise ValueError("empty action list")

    rec = FrameRecorder()
    rec.start()

    def add(step: int, a, b) -> None:
        cols = {"dream": a.dream_frame}
        if b is not None:
            cols["no_i_tokens"] = b.dream_frame
        if side_by_side:
            cols["real"] = a.real_frame
        rec.add(step, **cols)

    add(0, info, other.info if other else None)
    for t in range(steps):
        if actions is not None:
            act = actions[t % len(actions)]
        elif policy == "random":
            act = int(rng.integers(len(main.action_names)))
        else:
            act = None  # the agent picks
        info = main.step(act)
        other_info = other.step(info.action) if other else None
        add(t + 1, info, other_info)
    main.close()
    if other:
        other.close()
    names = ["dream"] + (["no_i_tokens"] if other else []) + (["real"] if side_by_side else [])
    path = rec.write_gif(out, names=names, fps=fps, scale=scale)
    return (path, len(rec)) if return_count else path


def export_branches_gif(out: str | Path, checkpoint=None, n: int = 8, steps: int = 30,
                        policy: str | Sequence[str | int] = "auto", scale: int = 4, fps: float = 10.0,
                        seed: int = 0, temperature: float = 1.0, device: str = "auto") -> tuple[Path, int]:
    """``n`` dreams side by side from one real start (env seed ``seed``), one batch: with the same actions
    (a list, or random actions drawn once) they differ only where the world model samples differently;
    with the agent, each future's agent acts on its own frames. Returns (path, GIF frames)."""
    from app.branching import rollout_futures
    from app.engine import ModelBundle
    from app.recorder import FrameRecorder

    if not 2 <= n <= 16:
        raise ValueError(f"--branches must be between 2 and 16, got {n}")
    bundle = checkpoint if isinstance(checkpoint, ModelBundle) else ModelBundle.load(checkpoint, device=device)
    from model.data.envs import action_names, make_env

    names = list(action_names(bundle.env_name))
    policy = _named_policy(policy, bundle)
    if policy == "random":
        actions = np.random.default_rng(seed).integers(len(names), size=steps).tolist()
    else:
        actions = "agent" if policy == "agent" else _resolve_actions(list(policy), names)
    env = make_env(bundle.env_name)
    try:
        start, _ = env.reset(seed=seed)
    finally:
        env.close()
    frames = rollout_futures(bundle, np.asarray(start, np.uint8), actions, n, steps, temperature)
    rec = FrameRecorder()
    rec.start()
    columns = [f"future {i + 1}" for i in range(n)]
    for t, row in enumerate(frames):
        rec.add(t, **dict(zip(columns, row)))
    return rec.write_gif(out, names=columns, fps=fps, scale=scale), len(rec)
