"""The dream under the move keys with action guidance: does weighing what the action changes make the view follow
the keys?

    python -m experiments.action_guidance.cli checkpoints/crafter --weight 0 0.5 1 --walks 64 --threads 1 --json g.json

For each ``--weight``, ``deltaplay eval checkpoint --parts keys terrain`` on the same held-out walks, with every dream
step guided against ``--contrast`` (:mod:`experiments.action_guidance.guidance`; 0 = the product's sampling).
"""
from __future__ import annotations

import argparse

from app.cli import UserError
from experiments.action_guidance.guidance import action_guidance
from experiments.command import run_command
from experiments.sampling.cli import figure, table_row
from model.train.run_dir import write_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="checkpoint folder (e.g. checkpoints/crafter)")
    p.add_argument("--weight", type=float, nargs="+", default=[0.0, 0.5, 1.0], help="guidance weights to score")
    p.add_argument("--contrast", default="noop", help="the action whose prediction is pushed away from")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--walks", type=int, default=64)
    p.add_argument("--walk-steps", type=int, default=30)
    p.add_argument("--seed", type=int, default=10000, help="first walk's seed")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None, help="write every weight's evaluation here")


def run(args: argparse.Namespace) -> int:
    from app import evaluate
    from model.checkpoint import load_config
    from model.data.envs import action_names

    names = action_names(load_config(args.checkpoint).env.name)
    if args.contrast not in names:
        raise UserError(f"--contrast {args.contrast!r} is not an action of this env ({', '.join(names)})")
    results = {}
    for weight in args.weight:
        with action_guidance(weight, names.index(args.contrast)):
            results[weight] = evaluate.evaluate_words(
                "checkpoint", args.checkpoint, "--parts", "keys", "terrain", "--walks", str(args.walks),
                "--walk-steps", str(args.walk_steps), "--threads", str(args.threads), "--seed", str(args.seed),
                "--temperature", str(args.temperature), "--quiet")
    print("weight  keys   first view  unseen  terrain (real)  unknown tiles  keys without I-tokens")
    for weight, result in results.items():
        print(f"{table_row(weight, result)}          {figure(result['keys']['no_i_tokens']['agreement'], '.3f')}")
    if args.json:
        write_json(args.json, {str(k): v for k, v in results.items()})
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command("python -m experiments.action_guidance.cli", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
