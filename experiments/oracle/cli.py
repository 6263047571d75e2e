"""Train a GridWorld actor-critic in a perfect dream (the real env) and test it in the real env.

It separates the two suspects when an agent trained in imagination fails: what the actor-critic of a
preset reaches in N updates when the world model is flawless (experiments/oracle/oracle_dream.py). Example::

    python -m experiments.oracle.cli --preset cpu --updates 150 --eval-every 50 --set actor_critic.gamma=0.5
"""
from __future__ import annotations

import argparse

from app.cli import UserError
from experiments.command import run_command
from model.train.run_dir import write_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="cpu", help="tiny | cpu | paper (GridWorld's adjustments included)")
    p.add_argument("--updates", type=int, default=150, help="actor-critic updates")
    p.add_argument("--eval-every", type=int, default=50, help="test the agent every N updates (and at 0)")
    p.add_argument("--episodes", type=int, default=20, help="real test episodes per evaluation")
    p.add_argument("--data-episodes", type=int, default=64, help="random-play episodes for burn-in windows")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set actor_critic.gamma=0.5 --set train.lr=1e-3")
    p.add_argument("--json", default=None, help="also write the records to this file")
    p.add_argument("--quiet", action="store_true", help="no progress line (the records are still printed)")


def run(args: argparse.Namespace) -> int:
    import torch

    from app.evaluate import ProgressLine
    from app.train_cmd import apply_overrides, parse_overrides
    from model.config import get_preset
    from experiments.oracle.oracle_dream import train_in_oracle
    from model.train.config_check import ConfigError, prepare_config

    if args.updates < 1 or args.eval_every < 1 or args.episodes < 1 or args.data_episodes < 1:
        raise UserError("--updates, --eval-every, --episodes and --data-episodes must be at least 1")
    try:
        cfg = get_preset(args.preset, "gridworld")
    except ValueError as e:
        raise UserError(str(e)) from None
    cfg = apply_overrides(cfg, parse_overrides(args.set))
    try:
        cfg = prepare_config(cfg)
    except ConfigError as e:
        raise UserError(str(e)) from None
    if args.threads:
        torch.set_num_threads(args.threads)
    a, t = cfg.actor_critic, cfg.train
    print(f"oracle dream: {args.preset} actor-critic, batch {t.actor_critic_batch}, horizon {a.horizon}, "
          f"lr {t.lr}, gamma {a.gamma}, lambda {a.lambda_}, entropy {a.entropy_weight}, "
          f"REINFORCE {a.reinforce_weight}, lookahead {a.lookahead_weight}; "
          f"{args.episodes} real test episodes", flush=True)

    def report(r: dict) -> None:
        if r["update"] == 0:
            print(f"random policy on the same seeds: {r['random_return']:.2f} ± {r['random_return_std']:.2f}")
        extra = "" if r["update"] == 0 else (f"  entropy {r['entropy']:.2f}  imagined reward/step "
                                             f"{r['imagined_reward']:+.3f}"
                                             + (f"  P(best-scored move) {r['lookahead_best_prob']:.2f}"
                                                if "lookahead_best_prob" in r else ""))
        print(f"update {r['update']:5d}  {r['wall_s']:7.1f} s  return {r['return']:.2f} ± {r['return_std']:.2f}  "
              f"deaths {r['deaths']}  P(onto adjacent coin) {r['p_onto_adjacent_coin']:.2f}{extra}", flush=True)

    records = train_in_oracle(cfg, args.updates, args.eval_every, args.episodes, args.data_episodes, args.seed,
                              report, ProgressLine(args.quiet))
    if args.json:
        write_json(args.json, {"config": cfg.to_dict(), "records": records})
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command("python -m experiments.oracle.cli", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
