"""`deltaplay train`: build the config from flags, then hand over to :func:`model.train.loop.train`.

Examples::

    deltaplay train --env gridworld --preset tiny --epochs 2 --run-dir runs/smoke
    deltaplay train --env crafter --preset cpu --run-dir runs/crafter-cpu        # Ctrl-C, then:
    deltaplay train --run-dir runs/crafter-cpu --resume
    torchrun --nproc_per_node=2 -m app train --env gridworld --preset tiny --run-dir runs/ddp

On ``--resume`` the model sections come from the run's checkpoint; only the schedule (``--frames``,
``--epochs``, ``--device``, ``--set train.*``) may change.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from app.cli import UserError

_RESUMABLE_PREFIXES = ("train.", "device")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env", default=None, help="crafter | gridworld | atari:<Game> (default: crafter)")
    p.add_argument("--preset", default=None, help="tiny | cpu | paper (default: cpu)")
    p.add_argument("--tokenizer", default=None, help="delta (Δ-IRIS, default) | iris (frame-only baseline)")
    p.add_argument("--no-i-tokens", action="store_true", help="world model without I-tokens (paper ablation)")
    p.add_argument("--device", default=None, help="auto | cpu | cuda[:N] | mps (default: auto)")
    p.add_argument("--frames", type=int, default=None, help="total env-frame budget (train.total_frames)")
    p.add_argument("--run-dir", default=None, help="run folder (default: runs/<env>-<preset>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its last checkpoint")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set train.lr=3e-4 (repeatable)")
    p.add_argument("--baselines", action="store_true",
                   help="also train a no-I-token world model and an IRIS 16-token tokenizer on the same batches")
    p.add_argument("--init", action="append", default=[], metavar="NAME=FOLDER[:STORED]",
                   help="start model NAME (tokenizer, iris_tokenizer, world_model, ...) from the weights in a "
                        "checkpoint folder, e.g. --init tokenizer=runs/tok/cpu (repeatable; new runs only)")
    p.add_argument("--epochs", type=int, default=None,
                   help="stop once epoch N is done (counted from the run's start, also on --resume)")
    p.add_argument("--minutes", type=float, default=None,
                   help="wall-clock budget: start no epoch that would not finish within it (ends on an epoch boundary)")
    p.add_argument("--tensorboard", action="store_true", help="also log to run_dir/tensorboard (if installed)")
    p.add_argument("--quiet", action="store_true", help="no progress bar (the log and metrics still get written)")


def parse_overrides(pairs: list[str], flag: str = "--set") -> list[tuple[str, str]]:
    """``KEY=VALUE`` strings -> (key, value) pairs; a malformed one is a :class:`UserError` naming ``flag``."""
    out = []
    for s in pairs:
        key, sep, value = s.partition("=")
        if not sep or not key:
            raise UserError(f"{flag} expects KEY=VALUE, got {s!r}")
        out.append((key.strip(), value.strip()))
    return out


def apply_overrides(cfg, pairs: list[tuple[str, str]]):
    """``cfg`` with each (key, value) override applied (``Config.override``); a bad one is a :class:`UserError`."""
    for key, value in pairs:
        try:
            cfg = cfg.override(key, value)
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"--set {key}={value}: {e.args[0] if e.args else e}") from None
    return cfg


def fresh_config(args: argparse.Namespace):
    from model.config import PRESETS, get_preset

    preset = args.preset or "cpu"
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    cfg = get_preset(preset, args.env or "crafter")
    if args.tokenizer is not None:
        if args.tokenizer not in ("delta", "iris"):
            raise UserError(f"unknown tokenizer {args.tokenizer!r}; choose delta or iris")
        cfg.tokenizer.kind = args.tokenizer
    if args.no_i_tokens:
        cfg.world_model.i_tokens = False
    if args.device is not None:
        cfg.device = args.device
    if args.seed is not None:
        cfg.seed = args.seed
    if args.frames is not None:
        cfg.train.total_frames = args.frames
    if args.baselines:
        cfg.train.baselines = True
    from model.checkpoint import split_init_spec

    for name, spec in parse_overrides(args.init, "--init"):
        if not Path(split_init_spec(spec)[0]).is_dir():
            raise UserError(f"--init {name}={spec}: no such checkpoint folder")
        cfg.train.init[name] = spec
    return apply_overrides(cfg, parse_overrides(args.set))


def resume_config(args: argparse.Namespace, run_dir: Path):
    """The run's own config, with only schedule changes allowed."""
    from model.checkpoint import CheckpointError, load_config
    from model.train.run_dir import RunDir

    rd = RunDir(run_dir)
    source = rd.last if (rd.last / "config.json").exists() else rd.config
    if not source.exists():
        raise UserError(f"nothing to resume in {run_dir} (no checkpoint and no config.json)")
    try:
        cfg = load_config(source)
    except CheckpointError as e:
        raise UserError(str(e)) from None
    env = args.env
    if env is not None:
        from model.data.envs import canonical_name

        try:
            env = canonical_name(env)
        except ValueError as e:
            raise UserError(str(e)) from None
    given = {"--env": (env, cfg.env.name), "--preset": (args.preset, cfg.preset),
             "--tokenizer": (args.tokenizer, cfg.tokenizer.kind)}
    for flag, (value, stored) in given.items():
        if value is not None and value != stored:
            raise UserError(f"{flag} {value} does not match the run being resumed ({stored}); "
                            "drop it or use a new --run-dir")
    if args.no_i_tokens and cfg.world_model.i_tokens:
        raise UserError("--no-i-tokens does not match the run being resumed (trained with I-tokens)")
    if args.init:
        raise UserError("--init starts the models of a new run; a resumed run continues from its checkpoint")
    if args.baselines and not cfg.train.baselines:
        raise UserError("--baselines cannot be added when resuming a run trained without them")
    if args.device is not None:
        cfg.device = args.device
    if args.frames is not None:
        cfg.train.total_frames = args.frames
    new = apply_overrides(cfg, parse_overrides(args.set))
    # Repeating the run's own settings is fine (the web UI resends its form); changing the networks is not.
    before, after = cfg.to_dict(), new.to_dict()
    for key, _ in parse_overrides(args.set):
        if key.startswith(_RESUMABLE_PREFIXES):
            continue
        a, b = before, after
        for part in key.split("."):
            a, b = a[part], b[part]
        if a != b:
            raise UserError(f"--set {key}: only train.* and device can change on --resume (the networks are fixed)")
    return new


def run(args: argparse.Namespace) -> int:
    from model.checkpoint import CheckpointError
    from model.train.config_check import ConfigError
    from model.train.loop import train
    from model.train.run_dir import RunFolderError, RunLockedError, is_no_space

    env_slug = (args.env or "crafter").replace(":", "-").lower()
    run_dir = Path(args.run_dir or f"runs/{env_slug}-{args.preset or 'cpu'}")
    if args.epochs is not None and args.epochs < 1:
        raise UserError("--epochs must be at least 1")
    if args.frames is not None and args.frames < 1:
        raise UserError("--frames must be positive")
    if args.minutes is not None and args.minutes <= 0:
        raise UserError("--minutes must be positive")
    cfg = resume_config(args, run_dir) if args.resume else fresh_config(args)
    try:
        summary = train(cfg, run_dir, resume=args.resume, max_epochs=args.epochs,
                        console=not args.quiet, tensorboard=args.tensorboard,
                        max_seconds=None if args.minutes is None else 60.0 * args.minutes)
    except (ConfigError, CheckpointError, RunLockedError, RunFolderError) as e:
        raise UserError(str(e)) from None
    except OSError as e:
        where = e.filename or run_dir
        if is_no_space(e):
            raise UserError(f"no space left on device while writing {where}; the last checkpoint is intact") from None
        if isinstance(e, PermissionError):
            raise UserError(f"cannot write {where}: permission denied (choose another --run-dir)") from None
        if isinstance(e, (NotADirectoryError, FileExistsError)):
            raise UserError(f"cannot use {where} as a run folder ({e.strerror})") from None
        raise
    if summary.get("rank", 0) == 0:
        print(f"deltaplay train: {summary['status']} at epoch {summary['epoch']}, "
              f"{summary['env_frames']} env frames; checkpoint {summary['checkpoint']}")
    return 0
