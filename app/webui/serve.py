"""`deltaplay ui`: its arguments and the serving loop. The app itself (gradio, torch) is imported only when it
runs, so `deltaplay ui --help` answers at once."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes it to your network)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860; 0 = any free port)")
    p.add_argument("--checkpoint", default=None,
                   help="checkpoint or run folder to open (default: checkpoints/crafter, else the newest run)")
    p.add_argument("--runs-dir", default="runs", help="where the Train tab writes runs (default runs/)")
    p.add_argument("--gallery-dir", default=None,
                   help="where exported GIFs go (default: gallery/ inside the runs folder, e.g. runs/gallery)")
    p.add_argument("--gif-frames", type=int, default=300,
                   help="steps the Play tab keeps for Export GIF: the last N (default 300)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] | mps, for playing (default auto)")


def run(args: argparse.Namespace) -> int:
    import signal
    import sys

    from app.cli import UserError
    from app.engine import CheckpointMissing, resolve_checkpoint_path
    from app.webui.app import build_app, launch
    from app.webui.jobs import JobManager
    from model.device import resolve_device

    try:
        if args.checkpoint:
            resolve_checkpoint_path(args.checkpoint)
        resolve_device(args.device)
    except (CheckpointMissing, ValueError) as e:
        raise UserError(str(e)) from None
    if args.gif_frames < 1:
        raise UserError("--gif-frames must be at least 1")
    demo = build_app(args.checkpoint, args.runs_dir, args.gallery_dir, args.device, gif_frames=args.gif_frames)
    jobs: JobManager = demo.deltaplay["jobs"]
    # SIGTERM (e.g. a service manager) stops the server like Ctrl-C, so training children are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        _, url = launch(demo, host=args.host, port=args.port or None, block=False, quiet=True)
        print(f"Δ-IRIS Playground ready: {url}  (Ctrl-C to stop; runs in {demo.deltaplay['settings'].runs_dir})",
              flush=True)
        demo.block_thread()
    finally:
        jobs.shutdown()
        demo.deltaplay["settings"].spares.close()
        demo.deltaplay["settings"].claims.close()
        demo.close()
    return 0
