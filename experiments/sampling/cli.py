"""The dream under the move keys, sampled with min-p: does cutting the token distributions' tails clean the smears?

    python -m experiments.sampling.cli checkpoints/crafter --min-p 0.05 0.2 --walks 64 --threads 1 --json minp.json

For each ``--min-p`` value, ``deltaplay eval checkpoint --parts keys terrain`` on the same held-out walks, with the
world models' tokens drawn by :func:`experiments.sampling.sampler.min_p_tokens` (0 = the product's sampling).
"""
from __future__ import annotations

import argparse
from typing import Any

from experiments.command import run_command
from experiments.sampling.sampler import min_p_sampling
from model.train.run_dir import write_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="checkpoint folder (e.g. checkpoints/crafter)")
    p.add_argument("--min-p", type=float, nargs="+", default=[0.0, 0.05, 0.2], help="min-p values to score")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--walks", type=int, default=64)
    p.add_argument("--walk-steps", type=int, default=30)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None, help="write every value's evaluation here")


def summary(result: dict[str, Any]) -> dict[str, float]:
    """The figures the study compares, with I-tokens."""
    keys, terrain = result["keys"]["i_tokens"], result["terrain"]["i_tokens"]
    return {"keys": keys["agreement"], "first_view": keys["first_view"]["agreement"],
            "unseen": keys["unseen"]["agreement"], "terrain": terrain["dream_share"], "real": terrain["real_share"],
            "unknown": terrain["unknown_share"]}


def figure(value: float | None, spec: str) -> str:
    """A short walk can have no move of a kind (no first-view or no unseen pairs): its agreement is None."""
    return "-" if value is None else format(value, spec)


def table_row(value: float, result: dict[str, Any]) -> str:
    """One line of a study's table: the value tried, then the dream's figures with I-tokens."""
    s = summary(result)
    return (f"{value:<6g}  {figure(s['keys'], '.3f')}  {figure(s['first_view'], '.2f')}        "
            f"{figure(s['unseen'], '.2f')}    {s['terrain']:.3f} ({s['real']:.3f})  {s['unknown']:.3f}")


def run(args: argparse.Namespace) -> int:
    from app import evaluate

    results = {}
    for min_p in args.min_p:
        with min_p_sampling(min_p):
            results[min_p] = evaluate.evaluate_words(
                "checkpoint", args.checkpoint, "--parts", "keys", "terrain", "--walks", str(args.walks),
                "--walk-steps", str(args.walk_steps), "--threads", str(args.threads),
                "--temperature", str(args.temperature), "--quiet")
    print("min-p   keys   first view  unseen  terrain (real)  unknown tiles")
    for min_p, result in results.items():
        print(table_row(min_p, result))
    if args.json:
        write_json(args.json, {str(k): v for k, v in results.items()})
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command("python -m experiments.sampling.cli", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
