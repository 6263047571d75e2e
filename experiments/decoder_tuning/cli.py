"""Closed-loop tuning of a checkpoint's Δ-decoder (experiments/decoder_tuning/tune.py).

Reads a checkpoint, trains its tokenizer's decoder side on closed-loop unrolls of fresh random-policy
episodes, reports closed-loop PSNR on held-out episodes before and after, and writes the whole checkpoint
(every model, the tuned tokenizer in place) to a new folder. Example::

    python -m experiments.decoder_tuning.cli checkpoints/crafter --out runs/crafter-tuned --minutes 30
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app.cli import UserError
from experiments.command import run_command, save_tuned_checkpoint
from model.train.run_dir import write_json

REPORT_STEPS = (1, 2, 5, 10)  # closed-loop steps whose PSNR the command prints


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="checkpoint folder to start from (e.g. checkpoints/crafter)")
    p.add_argument("--out", required=True, help="folder for the tuned checkpoint (must not exist yet)")
    p.add_argument("--minutes", type=float, default=30.0, help="wall-clock training budget")
    p.add_argument("--steps", type=int, default=None, help="stop after this many steps (if sooner)")
    p.add_argument("--unroll", type=int, default=4, help="closed-loop steps per example")
    p.add_argument("--batch", type=int, default=8, help="unrolls per step")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--episodes", type=int, default=48, help="random-policy training episodes")
    p.add_argument("--episode-steps", type=int, default=200, help="cut training episodes after this many steps")
    p.add_argument("--repeat", type=float, default=0.0,
                   help="training episodes' random policy repeats its last action with this probability "
                        "(0.75: walks of 4 steps on average, as a person at the keys makes)")
    p.add_argument("--grow", type=int, default=0,
                   help="first add this many ResBlocks to the end of each decoder level, each starting as the identity "
                        "(tokenizer.decoder_extra_blocks: more room to draw the new strip, the same tokens)")
    p.add_argument("--encoder", action="store_true",
                   help="also train the encode side (the tokens change: retrain the world models on them)")
    p.add_argument("--strip-weight", type=float, default=1.0,
                   help="weigh the strip each step's scroll brings into view this many times in the loss (the "
                        "tokenizer's tokenizer.strip_weight; 1 = the whole frame alike)")
    p.add_argument("--average", type=float, default=0.0,
                   help="end on an exponential moving average of the weights with this decay (e.g. 0.998; 0 = the "
                        "last iterate)")
    p.add_argument("--seed", type=int, default=900_000, help="first training env seed (far from eval's held-out seeds)")
    p.add_argument("--eval-seed", type=int, default=110_000,
                   help="first held-out env seed (the range `deltaplay eval checkpoint` takes its data from)")
    p.add_argument("--eval-episodes", type=int, default=16)
    p.add_argument("--eval-windows", type=int, default=256, help="closed-loop windows of 10 steps to score")
    p.add_argument("--half", action=argparse.BooleanOptionalAction, default=True,
                   help="store float16 weights without the actor-critic's EMA target, as the bundle does")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    p.add_argument("--json", default=None, help="also write the before/after figures to this file")
    p.add_argument("--quiet", action="store_true", help="no progress line")


def run(args: argparse.Namespace) -> int:
    import torch

    from app.evaluate import ProgressLine
    from model.checkpoint import CheckpointError, load_checkpoint, load_state
    from model.data.policies import RandomPolicy
    from experiments.decoder_tuning.tune import closed_loop_errors, decoder_parameters, grow_decoder, tune_decoder
    from model.data.envs import env_kwargs
    from model.data.view_motion import env_key_motions
    from model.eval.parts import heldout_seeds, psnr_from_mse, run_episodes

    if not 0.0 <= args.repeat < 1.0:
        raise UserError("--repeat must be in [0, 1)")
    if args.strip_weight < 1.0 or not 0.0 <= args.average < 1.0:
        raise UserError("--strip-weight must be at least 1 and --average in [0, 1)")
    if args.minutes <= 0 or args.unroll < 1 or args.batch < 1 or args.episodes < 1 or args.eval_episodes < 1:
        raise UserError("--minutes, --unroll, --batch, --episodes and --eval-episodes must be positive")
    out = Path(args.out)
    if out.exists():
        raise UserError(f"{out} already exists; pick a new --out folder")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        ck = load_checkpoint(args.checkpoint, with_state=False)
        state = load_state(args.checkpoint)
    except CheckpointError as e:
        raise UserError(str(e)) from None
    tok, cfg = ck.models["tokenizer"], ck.cfg
    try:
        decoder_parameters(tok)
    except ValueError as e:
        raise UserError(f"{args.checkpoint}: {e}") from None
    if args.grow < 0:
        raise UserError("--grow must be 0 or more")
    if args.grow:
        tok, cfg = grow_decoder(tok, cfg, args.grow)
        ck.models["tokenizer"] = tok
    if args.strip_weight != 1.0 and cfg.env.scroll_view is None:
        raise UserError(f"--strip-weight needs an env with a scrolling view; {cfg.env.name} has none")
    moves = env_key_motions(cfg.env.name) if args.strip_weight != 1.0 else None
    progress = ProgressLine(args.quiet)
    kw = env_kwargs(cfg.env.name, cfg.env.max_episode_steps)
    policy = RandomPolicy(cfg.env.num_actions, seed=args.seed, repeat=args.repeat)
    train_eps = run_episodes(cfg.env.name, policy, heldout_seeds(args.seed, args.episodes), args.episode_steps,
                             env_kwargs=kw, progress=progress, label="training episodes")
    eval_eps = run_episodes(cfg.env.name, RandomPolicy(cfg.env.num_actions, seed=args.eval_seed),
                            heldout_seeds(args.eval_seed, args.eval_episodes), args.episode_steps,
                            env_kwargs=kw, progress=progress, label="held-out episodes")
    horizon = max(REPORT_STEPS)

    def score() -> dict[str, float]:
        mse = closed_loop_errors(tok, eval_eps, horizon, args.eval_windows, seed=args.eval_seed)
        return {f"psnr_step_{s}": round(float(psnr_from_mse(mse[:, s - 1].mean())), 2) for s in REPORT_STEPS}

    def line(scores: dict[str, float]) -> str:
        return "  ".join(f"{s}: {scores[f'psnr_step_{s}']:.2f}" for s in REPORT_STEPS)

    before = score()
    progress.say(f"closed-loop PSNR before (dB, PSNR of the mean MSE at step): {line(before)}")
    total = args.steps or 0

    def tick(done: int, m: dict[str, float]) -> None:
        progress(f"tuning (loss {m['loss']:.4f})", done, total or done + 1)

    facts = tune_decoder(tok, train_eps, unroll=args.unroll, batch=args.batch, lr=args.lr, steps=args.steps,
                         seconds=60.0 * args.minutes, seed=args.seed, encoder=args.encoder,
                         strip_weight=args.strip_weight, view=cfg.env.scroll_view, average=args.average,
                         moves=moves, progress=tick)
    after = score()
    progress.say(f"closed-loop PSNR after {facts['steps']} steps ({facts['seconds']:.0f} s): {line(after)}")
    facts.update(source=str(args.checkpoint), grow=args.grow, train_seeds=[args.seed, args.seed + args.episodes - 1],
                 train_frames=int(sum(e.length for e in train_eps)), before=before, after=after)
    save_tuned_checkpoint(out, ck.models, cfg, state, "decoder_tuning", facts, half=args.half)
    progress.say(f"wrote {out}")
    if args.encoder:  # printed even with --quiet: the checkpoint's world models are now stale
        print(f"note: --encoder changed what the tokens mean, so the world models in {out} no longer match its "
              f"tokenizer; train new ones from it: deltaplay train ... --init tokenizer={out}", file=sys.stderr)
    if args.json:
        write_json(args.json, facts)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command("python -m experiments.decoder_tuning.cli", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
