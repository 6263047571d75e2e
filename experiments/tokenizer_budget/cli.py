"""Which tokenizer learns Crafter best in a fixed CPU budget? cpu Δ vs paper Δ vs IRIS-style, trained on
the same transitions and batches for the same budget each (experiments/tokenizer_budget/run.py). Example::

    python -m experiments.tokenizer_budget.cli --minutes 120 --json runs/tokenizer_experiment/result.json

Budget: each model gets ``--minutes`` on its own clock (``--clock cpu``: the process CPU time inside its
training steps; ``wall``: elapsed time). Models train round-robin (``--schedule interleaved``) so that
machine load hits all of them alike, or one after the other; the whole run takes about (number of models)
x budget, plus data collection and evaluation.

Data: training transitions from env seeds ``--train-seed``.., held-out ones from ``--seed``.., both random
policy, episodes cut after ``--episode-steps`` (training) or ``ceil(--frames / --data-episodes)`` steps
(held out), cached as .npz in ``--data-dir`` and reused by later runs with the same settings.

Report (held out): per-frame PSNR median and mean, PSNR of the mean MSE and of the worst 1%, the copy-x_{t-1}
baseline, the median PSNR with shuffled tokens (do the tokens carry anything?), codebook use, bits per frame,
steps and steps/s. Checkpoints go to ``--out-dir/<name>`` (``--eval-only`` re-evaluates them) and
``--out-dir/worst_frames.png`` shows the held-out frames the cpu Δ-tokenizer gets most wrong. To use two
cores, train models in separate processes with the same ``--out-dir`` (``--models cpu``, ``--models iris``),
then compare them with ``--eval-only --models cpu iris``.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
from pathlib import Path
from typing import Any

from app.cli import UserError
from experiments.command import run_command
from experiments.tokenizer_budget.run import MODELS
from model.train.run_dir import write_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--minutes", type=float, default=120.0, help="training budget per model, on its own clock")
    p.add_argument("--steps", type=int, default=0, help="cap on training steps per model (0 = none)")
    p.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                   help="budget clock: process CPU time in the model's steps (robust to load) or wall time")
    p.add_argument("--schedule", choices=("interleaved", "sequential"), default="interleaved",
                   help="one step per model in turn, or one model after another")
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS),
                   help="which tokenizers to train (the worst frames are chosen by cpu's errors, else the first's)")
    p.add_argument("--width", type=int, default=None, help="conv base width of every model (default: cpu preset's)")
    p.add_argument("--train-batch", type=int, default=0, help="pairs per training step (0 = the cpu preset's)")
    p.add_argument("--train-frames", type=int, default=50_000, help="training transitions (random policy)")
    p.add_argument("--train-seed", type=int, default=0, help="first training env seed (must stay below --seed)")
    p.add_argument("--episode-steps", type=int, default=250, help="training episodes are cut after this many steps")
    p.add_argument("--seed", type=int, default=10_000, help="first held-out env seed")
    p.add_argument("--frames", type=int, default=2000, help="held-out transitions")
    p.add_argument("--data-episodes", type=int, default=16, help="episodes the held-out transitions come from")
    p.add_argument("--data-dir", default="runs/tokenizer_data", help="cache of collected transitions (.npz)")
    p.add_argument("--out-dir", default="runs/tokenizer_experiment", help="checkpoints and worst_frames.png")
    p.add_argument("--worst", type=int, default=8, help="frames in worst_frames.png")
    p.add_argument("--curve-every", type=float, default=10.0,
                   help="held-out learning-curve point every this many budget minutes per model (0 = off)")
    p.add_argument("--curve-frames", type=int, default=256, help="held-out transitions per learning-curve point")
    p.add_argument("--eval-only", action="store_true", help="re-evaluate the checkpoints in --out-dir")
    p.add_argument("--batch", type=int, default=64, help="frames per evaluation batch")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (one core per run keeps the timings comparable)")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def check(args: argparse.Namespace) -> None:
    if args.minutes <= 0 and args.steps <= 0:
        raise UserError("give a positive --minutes or --steps")
    for name in ("train_frames", "frames", "data_episodes", "episode_steps", "batch", "worst", "threads"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    if args.width is not None and args.width < 1:
        raise UserError("--width must be at least 1")
    if args.train_seed >= args.seed:
        raise UserError(f"training seeds (--train-seed {args.train_seed}..) must lie below the held-out "
                        f"seeds (--seed {args.seed}..)")


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from experiments.tokenizer_budget import run as exp
    from model.config import cpu
    from model.device import resolve_device
    from model.eval.parts import error_summary

    check(args)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    clock = args.clock if device.type == "cpu" else "wall"  # CPU time means nothing for GPU work
    out_dir, tr, q = Path(args.out_dir), cpu().train, args.quiet
    batch = args.train_batch or tr.tokenizer_batch * (tr.tokenizer_seq - 1)  # the cpu preset's pairs per step

    exp.say(q, "data:")
    train_data = None if args.eval_only else exp.load_or_collect(
        args.data_dir, "train", args.train_seed, args.train_frames, args.episode_steps, q, seed_limit=args.seed)
    test_data = exp.load_or_collect(args.data_dir, "test", args.seed, args.frames,
                                    math.ceil(args.frames / args.data_episodes), q)
    cfgs = exp.tokenizer_configs(args.width)
    training: dict[str, Any] = {"threads": torch.get_num_threads(), "clock": clock, "schedule": args.schedule,
                                "budget_minutes": args.minutes, "max_steps": args.steps, "train_batch": batch,
                                "train_data": train_data.meta if train_data is not None else None}
    if args.eval_only:
        arms = exp.load_arms(args.models, out_dir, cfgs, device)
        runs = [json.loads(a.run) for a in arms if a.run]  # what they were trained with, not these options
        training = runs[0] if runs else {k: None for k in training}
    else:
        arms = exp.new_arms(args.models, cfgs, args.train_seed, tr.lr, tr.weight_decay, device)
        params = ", ".join(f"{a.name} {sum(p.numel() for p in a.tok.parameters()) / 1e6:.2f}M" for a in arms)
        exp.say(q, f"training {params} params; {args.minutes} {clock}-min / {args.steps or 'no cap'} steps each, "
                   f"batch {batch}, {args.schedule}, {torch.get_num_threads()} thread(s), {device}")
        curve_data = None
        if args.curve_every > 0:  # a fixed subset spread over the held-out episodes
            n = min(args.curve_frames, len(test_data))
            curve_data = test_data.subset(np.linspace(0, len(test_data) - 1, n).astype(int))
        exp.train(arms, train_data, budget_s=args.minutes * 60 if args.minutes > 0 else math.inf,
                  max_steps=args.steps, batch=batch, grad_clip=tr.grad_clip, clock=clock, schedule=args.schedule,
                  seed=args.train_seed, curve_every_s=args.curve_every * 60, curve_data=curve_data,
                  eval_batch=args.batch, quiet=q, device=device)
        exp.save_arms(arms, out_dir, cfgs, training)

    exp.say(q, f"evaluating on {len(test_data)} held-out transitions ...")
    result: dict[str, Any] = {
        "experiment": "tokenizers", "env": exp.ENV, "device": str(device), "torch": torch.__version__,
        "python": platform.python_version(), "threads": torch.get_num_threads(),
        **{k: v for k, v in training.items() if k != "train_data"},
        "lr": tr.lr, "weight_decay": tr.weight_decay, "grad_clip": tr.grad_clip, "eval_only": bool(args.eval_only),
        "data": {"train": training["train_data"], "test": test_data.meta}, "out_dir": str(out_dir), "models": {}}
    errors = {}
    for a in arms:
        result["models"][a.name], errors[a.name] = exp.model_report(
            a, cfgs[a.name], test_data, result["clock"] or clock, out_dir / a.name, args.batch, device)
    prev, _, nxt = test_data.pairs(np.arange(len(test_data)))
    result["copy_prev"] = {"bits_per_frame": 0.0, **error_summary(exp.copy_mse(prev, nxt))}
    result["worst_frames"] = exp.worst_frames(arms, errors, test_data, args.worst, out_dir / "worst_frames.png",
                                              device)

    print(exp.format_table(result))
    print(f"worst frames: {result['worst_frames']['path']}; "
          f"checkpoints: {', '.join(str(out_dir / a.name) for a in arms)}")
    if args.json:
        print(f"wrote {write_json(args.json, result)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command("python -m experiments.tokenizer_budget.cli", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
