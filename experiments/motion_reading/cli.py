"""Tune the world model's motion head on decoded frames, and write a checkpoint with it.

    python -m experiments.motion_reading.cli checkpoints/crafter --out runs/motion_read --walks 160 --minutes 10

Walks of move keys on training seeds; the head reads the real frames and the real tokens decoded in the
tokenizer's closed loop, each labelled with the real motion (:mod:`experiments.motion_reading.tune`). The
checkpoint is the input one with every motion head tuned (float16, as the bundle); score it with
``deltaplay eval checkpoint OUT --parts keys terrain --walks 64``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from app.cli import UserError
from experiments.command import run_command, save_tuned_checkpoint
from model.train.run_dir import write_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="checkpoint folder (e.g. checkpoints/crafter)")
    p.add_argument("--out", required=True, help="new checkpoint folder")
    p.add_argument("--walks", type=int, default=160, help="training walks")
    p.add_argument("--walk-steps", type=int, default=60)
    p.add_argument("--seed", type=int, default=960_000, help="first training walk's seed")
    p.add_argument("--eval-walks", type=int, default=32, help="held-out walks for the accuracies")
    p.add_argument("--eval-seed", type=int, default=970_000)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--steps", type=int, default=None, help="stop after this many steps (default: the budget)")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--every", type=int, default=250,
                   help="check the held-out walks' decoded accuracy every this many steps; the head keeps its best "
                        "(the untuned head if no check beats it; 0: no checks, the last step's head)")
    p.add_argument("--data", default=None,
                   help="a file of the walks' frames: read if it exists, else written (walks and seeds must match)")
    p.add_argument("--decoded-share", type=float, default=0.75, help="share of decoded frames in each batch")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None, help="write the facts of the run here")
    p.add_argument("--quiet", action="store_true")


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from app.evaluate import ProgressLine
    from experiments.motion_reading.tune import Reading, accuracy, load_readings, readings, save_readings, tune_head
    from experiments.scroll_code.cli import real_walks
    from model.checkpoint import CheckpointError, load_checkpoint, load_state
    from model.data.view_motion import env_key_motions

    if not 0.0 <= args.decoded_share <= 1.0 or args.walks < 1 or args.eval_walks < 1 or args.minutes <= 0:
        raise UserError("--walks, --eval-walks and --minutes must be positive and --decoded-share in [0, 1]")
    out = Path(args.out)
    if out.exists():
        raise UserError(f"{out} already exists; pick a new --out folder")
    torch.set_num_threads(args.threads)
    try:
        ck = load_checkpoint(args.checkpoint, with_state=False)
        state = load_state(args.checkpoint)
    except CheckpointError as e:
        raise UserError(str(e)) from None
    cfg = ck.cfg
    view = cfg.env.scroll_view
    heads = {n: m.motion_head for n, m in ck.models.items() if n.startswith("world_model") and m.motion}
    if view is None or not heads:
        raise UserError(f"{args.checkpoint}: needs an env with a scrolling view and a world model with a motion input")
    if cfg.env.name != "crafter":
        raise UserError(f"{args.checkpoint}: the walks are Crafter's; this checkpoint is for {cfg.env.name}")
    tok, moves = ck.models["tokenizer"].eval(), env_key_motions(cfg.env.name)
    progress = ProgressLine(args.quiet)

    def gather(first: int, n: int, label: str) -> tuple[Reading, Reading]:
        real, dec = [], []
        for w, one in enumerate(real_walks(first, n, args.walk_steps)):
            r, d = readings(tok, one["frames"], np.array(one["actions"]), view, moves)
            real.append(r)
            dec.append(d)
            progress(label, w + 1, n)
        return Reading.cat(real), Reading.cat(dec)

    key = [args.checkpoint, args.seed, args.walks, args.walk_steps, args.eval_seed, args.eval_walks]
    if args.data and Path(args.data).is_file():
        parts = load_readings(args.data, key)
        if parts is None:
            raise UserError(f"{args.data} holds other walks; remove it or pick another --data file")
    else:
        parts = [*gather(args.seed, args.walks, "training walks"), *gather(args.eval_seed, args.eval_walks, "held-out walks")]
        if args.data:
            save_readings(args.data, key, parts)
    train_real, train_dec, test_real, test_dec = parts
    facts: dict = {"source": str(args.checkpoint), "train_seeds": [args.seed, args.seed + args.walks - 1],
                   "train_pairs": len(train_real), "eval_seeds": [args.eval_seed, args.eval_seed + args.eval_walks - 1],
                   "heads": {}}
    for name, head in heads.items():
        before = {"real": accuracy(head, test_real), "decoded": accuracy(head, test_dec)}
        run_facts = tune_head(head, train_real, train_dec, seconds=60 * args.minutes / len(heads), steps=args.steps,
                              lr=args.lr, decoded_share=args.decoded_share, seed=args.seed,
                              weight_decay=args.weight_decay, every=args.every,
                              validate=(lambda: accuracy(head, test_dec)) if args.every > 0 else None,
                              progress=lambda d, l: progress(f"{name} head (loss {l:.3f})", d, args.steps or d + 1))
        after = {"real": accuracy(head, test_real), "decoded": accuracy(head, test_dec)}
        facts["heads"][name] = {**run_facts, "before": before, "after": after}
        progress.say(f"{name}: held-out accuracy real {before['real']:.3f} -> {after['real']:.3f}, "
                     f"decoded {before['decoded']:.3f} -> {after['decoded']:.3f} ({run_facts['steps']} steps)")
    save_tuned_checkpoint(out, ck.models, cfg, state, "motion_reading", facts, half=True)
    progress.say(f"wrote {out}")
    if args.json:
        write_json(args.json, facts)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command("python -m experiments.motion_reading.cli", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
