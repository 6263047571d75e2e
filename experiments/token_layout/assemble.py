"""A bundle from parts trained in separate runs: each model from its own checkpoint folder, one config.

    python -m experiments.token_layout.assemble runs/bundle-k16 --config runs/motion/checkpoints/last \
        --part world_model=runs/motion/checkpoints/last --part world_model_no_itok=runs/twin/checkpoints/last:world_model \
        --part tokenizer=checkpoints/crafter --part iris_tokenizer=checkpoints/crafter \
        --part actor_critic=checkpoints/crafter --set train.baselines=true

The config is the one of ``--config`` with the ``--set`` overrides; every part must fit it (shapes are checked as by
``deltaplay train --init``). A name given several parts gets their uniform average (floating-point tensors; the
others from the last part): snapshots of one run averaged over its last few hundred steps make a steadier model
than its last iterate (``train.weight_average`` does the same inside a run). The folder written is a full-precision
checkpoint with no optimiser state; export it with ``model.checkpoint.export_checkpoint`` (fp16, play-only) to make
it a bundle.
"""
from __future__ import annotations

import argparse

from experiments.command import run_command


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", help="folder to write")
    p.add_argument("--config", required=True, help="checkpoint folder whose config the bundle takes")
    p.add_argument("--part", action="append", default=[], metavar="NAME=FOLDER[:STORED]", required=True,
                   help="a model of the bundle and where its weights are (repeatable; a repeated NAME: the average)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")


def run(args: argparse.Namespace) -> int:
    import torch

    from app.cli import UserError
    from model.checkpoint import CheckpointError, build_model, load_config, load_init_weights, save_checkpoint

    cfg = load_config(args.config)
    for kv in args.set:
        key, _, value = kv.partition("=")
        cfg = cfg.override(key, value)
    sources: dict[str, list[str]] = {}
    for spec in args.part:
        name, _, source = spec.partition("=")
        if not source:
            raise UserError(f"--part {spec!r}: expected NAME=FOLDER[:STORED]")
        sources.setdefault(name, []).append(source)
    models = {}
    for name, folders in sources.items():
        models[name] = model = build_model(name, cfg)
        states = []
        for source in folders:
            try:
                print(load_init_weights(name, source, cfg, model))
            except CheckpointError as e:
                raise UserError(str(e)) from None
            states.append({k: v.clone() for k, v in model.state_dict().items()})
        if len(folders) > 1:
            model.load_state_dict({k: torch.stack([s[k].double() for s in states]).mean(0).to(v.dtype)
                                   if v.is_floating_point() else v for k, v in states[-1].items()})
            print(f"{name}: the average of {len(folders)} parts")
    save_checkpoint(args.out, models, cfg)
    print(f"wrote {args.out}: {', '.join(models)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command("python -m experiments.token_layout.assemble", __doc__.split("\n\n")[0], add_arguments, run,
                       argv)


if __name__ == "__main__":
    raise SystemExit(main())
