"""Warm start for a checkpoint whose shapes differ from its source: every tensor whose name and shape match is
copied, the rest keeps its fresh init.

    python -m experiments.token_layout.make_init checkpoints/crafter runs/k16-init \
        --set tokenizer.tokens_per_frame=16 --set tokenizer.vocab_size=64 --set tokenizer.fsq_levels=[4,4,4]

A tokenizer with another token grid keeps the bundle's encoder and decoder and gets new quantizer projections;
a world model keeps its transformer body and gets new token tables and positions. The folder it writes is a
``train.init`` source like any checkpoint.
"""
from __future__ import annotations

import argparse

import torch

from experiments.command import run_command


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="checkpoint folder to copy from")
    p.add_argument("out", help="folder to write")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (as deltaplay train)")
    p.add_argument("--models", nargs="+", default=["tokenizer", "world_model", "world_model_no_itok"])


def copy_matching(src: dict[str, torch.Tensor], model: torch.nn.Module) -> tuple[list[str], list[str]]:
    """Copy the tensors of ``src`` whose name and shape fit ``model``; -> (copied, left fresh)."""
    own = model.state_dict()
    fit = {k: v for k, v in src.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict({**own, **fit})
    return sorted(fit), sorted(set(own) - set(fit))


def run(args: argparse.Namespace) -> int:
    from model.checkpoint import build_model, load_checkpoint, save_checkpoint

    ck = load_checkpoint(args.source, names=tuple(args.models), with_state=False)
    cfg = ck.cfg
    for kv in args.set:
        key, _, value = kv.partition("=")
        cfg = cfg.override(key, value)
    models = {}
    for name in args.models:
        models[name] = build_model(name, cfg)
        copied, fresh = copy_matching(ck.models[name].state_dict(), models[name])
        print(f"{name}: {len(copied)} tensors copied, {len(fresh)} fresh: {', '.join(fresh)}")
    save_checkpoint(args.out, models, cfg)
    print(f"wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command("python -m experiments.token_layout.make_init", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
