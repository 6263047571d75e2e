"""`deltaplay stage`: the next training stage of a bundled checkpoint, in one command that outlives a sitting.

    deltaplay stage                                     # checkpoints/crafter, 150 minutes, runs/stage-<seed>
    deltaplay stage --minutes 10 --device cuda          # a lent GPU: the same stage, more done per minute

A bundle that trains in stages carries a plan beside its weights (``stage.json``): the config overrides of a
stage's run (its schedule; ``set_gpu`` adds bigger batches and more steps on a GPU), the seed of the next stage's data, the bundle's own score and the history of every
stage. A stage

1. starts every model from the bundle's weights (a new run folder), or resumes the run folder a stopped stage
   left (``--run-dir``, same command);
2. collects fresh data with the next seed (data is never committed: a seed re-collects it) and trains until the
   plan's steps are done or ``--minutes`` run out; SIGTERM or the budget stops it with a checkpoint;
3. scores the dream (``deltaplay eval checkpoint --parts keys terrain``, the same held-out walks every stage);
4. exports the run's weights over the bundle (fp16, no optimiser state) only if the score beats the bundle's,
   and appends the stage to the plan's history either way.

The optimiser state is not kept between stages (it would double the bundle's size): each stage restarts AdamW,
whose moment estimates settle within a few dozen steps at the plan's learning rate.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import time
from pathlib import Path
from typing import Any

from app.cli import UserError

PLAN = "stage.json"
SCORE = ("keys", "i_tokens", "agreement")  # where the score lives in the eval JSON


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", default="checkpoints/crafter",
                   help="the bundle folder to train on (needs a stage.json plan beside its weights)")
    p.add_argument("--minutes", type=float, default=150.0, help="training budget of this stage (wall clock)")
    p.add_argument("--run-dir", default=None,
                   help="the stage's run folder (default: runs/stage-<its data seed>); a stage stopped before it "
                        "was scored resumes there with the same command")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] | mps")
    p.add_argument("--walks", type=int, default=64,
                   help="held-out key walks of the score (same every stage); fewer are noisier than a stage's gain")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="one more config override for this stage only (recorded in the history)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def read_plan(bundle: Path) -> dict[str, Any]:
    file = bundle / PLAN
    if not file.is_file():
        raise UserError(f"{file}: no stage plan; a bundle trained in stages carries one (see checkpoints/README.md)")
    try:
        plan = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{file}: not valid JSON ({e})") from None
    for key in ("set", "next_seed", "history"):
        if key not in plan:
            raise UserError(f"{file}: the plan has no {key!r}")
    return plan


def write_plan(bundle: Path, plan: dict[str, Any]) -> None:
    from model.train.run_dir import write_text_atomic

    write_text_atomic(bundle / PLAN, json.dumps(plan, indent=2) + "\n")


def stage_config(bundle: Path, plan: dict[str, Any], extra: list[tuple[str, str]], gpu: bool = False):
    """The bundle's config with the plan's overrides (on a GPU also its ``set_gpu`` ones, and collection on every
    core), this stage's own, the next data seed, and every model starting from the bundle's weights."""
    from app.train_cmd import apply_overrides
    from model.checkpoint import CheckpointError, load_config, stored_models

    try:
        cfg = load_config(bundle)
        names = stored_models(bundle)
    except CheckpointError as e:
        raise UserError(str(e)) from None
    sets = dict(plan["set"])
    if gpu:
        sets = {"train.num_envs": max(2, os.cpu_count() or 2), **sets, **plan.get("set_gpu", {})}
    cfg = apply_overrides(cfg, [(k, json.dumps(v)) for k, v in sets.items()] + extra)
    cfg.seed = int(plan["next_seed"])
    cfg.train.init = {name: str(bundle.resolve()) for name in names}
    return cfg


def train_stage(cfg, run_dir: Path, minutes: float, quiet: bool) -> dict[str, Any]:
    """One stage's training: a new run, or the one a stopped stage left in ``run_dir``; the budget (like SIGTERM)
    stops it with a checkpoint. A run that already finished its epoch is not trained again."""
    from model.checkpoint import checkpoint_exists, load_state
    from model.train.loop import train
    from model.train.run_dir import RunFolderError

    last = run_dir / "checkpoints" / "last"
    if checkpoint_exists(last) and int(load_state(last).get("epoch", 0)) >= 1:
        state = load_state(last)
        return {"status": "finished", "checkpoint": str(last), "env_frames": int(state.get("env_frames", 0)),
                "wall_s": round(float(state.get("wall_time", 0.0)), 1), "steps": None}
    deadline = time.monotonic() + minutes * 60
    steps = {"tokenizer": 0, "world_model": 0, "actor_critic": 0}

    def progress(event: dict[str, Any]) -> None:
        if event.get("phase") in steps and "step" in event:
            steps[event["phase"]] = max(steps[event["phase"]], int(event["step"]))

    t0 = time.monotonic()
    try:
        summary = train(cfg, run_dir, resume=run_dir.exists() and any(run_dir.iterdir()), max_epochs=1,
                        progress=progress, console=not quiet, stop=lambda: time.monotonic() > deadline)
    except RunFolderError as e:
        raise UserError(str(e)) from None
    return {**summary, "wall_s": round(time.monotonic() - t0, 1), "steps": steps}


def score(checkpoint: Path, walks: int, threads: int, out: Path) -> dict[str, Any]:
    """The dream under the move keys and its terrain, through the one evaluation path (``deltaplay eval``)."""
    from app import evaluate

    result = evaluate.evaluate_words("checkpoint", str(checkpoint), "--parts", "keys", "terrain", "--walks", str(walks),
                                     "--threads", str(threads), "--json", str(out), "--quiet")
    value = result
    for key in SCORE:
        value = value.get(key, {}) if isinstance(value, dict) else {}
    if not isinstance(value, (int, float)):
        raise UserError(f"{checkpoint}: the evaluation has no {'/'.join(SCORE)} (a Δ bundle of a scrolling env?)")
    return {"score": float(value), "walks": walks, "keys": result["keys"], "terrain": result.get("terrain")}


def terrain_words(terrain: dict[str, Any] | None) -> str:
    """The dream's terrain beside the real env's, for the stage's last line: the score is the keys alone, and a
    dream can scroll well and still turn into an empty field."""
    shares = (terrain or {}).get("i_tokens")
    if not shares:
        return ""
    return f" (terrain: {shares['dream_share']:.0%} of the dream's tiles, {shares['real_share']:.0%} of the real ones)"


def command_line(args: argparse.Namespace, run_dir: Path) -> str:
    """The command that ran this stage, for the history."""
    words = ["deltaplay", "stage", "--bundle", args.bundle, "--minutes", f"{args.minutes:g}", "--run-dir", str(run_dir),
             "--device", args.device, "--walks", str(args.walks)]
    words += [w for kv in args.set for w in ("--set", kv)]
    return " ".join(shlex.quote(w) for w in words)


def run(args: argparse.Namespace) -> int:
    import torch

    from app.train_cmd import parse_overrides
    from model.checkpoint import export_checkpoint
    from model.device import resolve_device

    if args.minutes <= 0:
        raise UserError("--minutes must be positive")
    if args.threads:
        torch.set_num_threads(args.threads)
    bundle = Path(args.bundle)
    plan = read_plan(bundle)
    run_dir = Path(args.run_dir or f"runs/stage-{plan['next_seed']}")
    extra = parse_overrides(args.set)
    if plan.get("best") is None:
        print(f"scoring the bundle {bundle} first (its score is the bar this stage must beat) ...", flush=True)
        plan["best"] = score(bundle, args.walks, args.threads, run_dir.parent / f"{run_dir.name}-bundle-eval.json")
        write_plan(bundle, plan)
    bar = plan["best"]
    if bar.get("walks") != args.walks:  # a bar from other walks is no bar: score the bundle on these
        print(f"scoring the bundle {bundle} on {args.walks} walks (its recorded score used {bar.get('walks')}) ...",
              flush=True)
        bar = score(bundle, args.walks, args.threads, run_dir.parent / f"{run_dir.name}-bundle-eval.json")
    try:
        gpu = resolve_device(args.device).type == "cuda"
    except ValueError as e:
        raise UserError(str(e)) from None
    cfg = stage_config(bundle, plan, extra, gpu=gpu)
    cfg.device = args.device
    trained = train_stage(cfg, run_dir, args.minutes, args.quiet)
    last = Path(trained["checkpoint"])
    if not last.is_dir():
        raise UserError(f"the stage stopped before it trained anything ({trained['status']}); run it again")
    print(f"stage trained for {trained['wall_s'] / 60:.1f} min ({trained['status']}): steps {trained['steps']}; "
          "scoring ...", flush=True)
    result = score(last, args.walks, args.threads, run_dir / "stage-eval.json")
    best = bar["score"]
    improved = result["score"] > best
    if improved:
        export_checkpoint(last, bundle)
        plan["best"] = result
    plan["history"].append({
        "stage": len(plan["history"]) + 1, "finished": time.strftime("%Y-%m-%d %H:%M"),
        "command": command_line(args, run_dir),
        "seed": cfg.seed, "device": str(cfg.device), "host_cpus": os.cpu_count(), "status": trained["status"],
        "wall_s": trained["wall_s"], "env_frames": trained["env_frames"], "steps": trained["steps"],
        "overrides": dict(extra), "score": result["score"], "bar": best, "exported": improved,
        "keys": result["keys"], "terrain": result["terrain"]})
    plan["next_seed"] = int(plan["next_seed"]) + 1
    write_plan(bundle, plan)
    verdict = "exported over the bundle" if improved else "bundle kept"
    print(f"score {result['score']:.3f} vs the bundle's {best:.3f}: {verdict}{terrain_words(result['terrain'])}; "
          f"plan: {bundle / PLAN}")
    return 0
