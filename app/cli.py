"""`deltaplay` command line: one entry point, one module per subcommand.

Each subcommand module defines ``add_arguments(parser)`` and ``run(args) -> int``; this file only
routes, so importing it is cheap and `deltaplay --help` does not import torch or gradio.
"""
from __future__ import annotations

import argparse
import importlib
import sys

import app  # noqa: F401  (sets the no-telemetry environment first)

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "ui": ("app.webui.serve", "serve the web UI on 127.0.0.1 (opens on the bundled Crafter checkpoint)"),
    "play": ("app.pygame_window", "play inside a world model in a pygame window"),
    "train": ("app.train_cmd", "train Δ-IRIS (tokenizer, world model, actor-critic) in a run folder"),
    "stage": ("app.stage", "the next training stage of a bundled checkpoint: train for a budget, score the dream, "
                           "export only if it improved"),
    "export-gif": ("app.gif_export", "roll out a world model and write a GIF"),
    "eval": ("app.evaluate", "measure tokenizers, world models and agents on held-out data"),
    "bench": ("app.bench", "speed and memory benchmarks (dream, imagine, train, collect)"),
}


class UserError(Exception):
    """A problem the user can fix; printed as one line, without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deltaplay", description="Δ-IRIS Playground")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        # Only the chosen subcommand's module is imported (see main()).
        p.set_defaults(_name=name)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        if argv and argv[0] not in ("-h", "--help") and argv[0] not in COMMANDS:
            parser.error(f"unknown command {argv[0]!r}; choose one of {', '.join(COMMANDS)}")
        parser.print_help()
        return 0
    name = argv[0]
    module = importlib.import_module(COMMANDS[name][0])
    sub = argparse.ArgumentParser(prog=f"deltaplay {name}", description=COMMANDS[name][1])
    module.add_arguments(sub)
    args = sub.parse_args(argv[1:])
    try:
        return int(module.run(args) or 0)
    except UserError as e:
        print(f"deltaplay {name}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"deltaplay {name}: interrupted", file=sys.stderr)
        return 130
