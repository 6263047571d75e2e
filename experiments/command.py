"""The one way an experiment's command line runs: its own parser, and a :class:`app.cli.UserError` printed as
one line with exit status 2 (as ``deltaplay`` does), so each ``experiments/<name>/cli.py`` holds only its
arguments and its ``run``."""
from __future__ import annotations

import argparse
import sys
from typing import Callable

from app.cli import UserError


def run_command(prog: str, description: str | None, add_arguments: Callable[[argparse.ArgumentParser], None],
                run: Callable[[argparse.Namespace], int], argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: the process's) with ``add_arguments`` and hand the result to ``run``."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return int(run(args) or 0)
    except UserError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2


def save_tuned_checkpoint(out, models: dict, cfg, source_state: dict, key: str, facts: dict, half: bool) -> None:
    """A tuned copy of a checkpoint: its models, the source's counters, and this run's facts under ``key``
    (``half``: float16 weights without what the loader rebuilds, as the bundle)."""
    import json

    from model.checkpoint import REBUILDABLE, save_checkpoint

    counters = {k: source_state[k] for k in ("epoch", "env_frames") if k in source_state}
    try:
        save_checkpoint(out, models, cfg, {**counters, key: json.dumps(facts)}, half=half,
                        skip=REBUILDABLE if half else ())
    except OSError as e:
        raise UserError(f"could not write {out}: {e}") from None
