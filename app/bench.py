"""`deltaplay bench`: speed and memory of the hot paths, one workload per sub-benchmark.

Workloads match the reference table in the README so figures compare one to one:

* ``dream``   - one human step in the dream at batch 1 (K tokens with the KV cache + decode + I-token)
* ``imagine`` - batched imagination with the actor acting, batch B, horizon H (frames/s)
* ``train``   - one optimiser step of the tokenizer, the world model and the actor-critic
* ``collect`` - real env steps/s with 1 and N worker processes
* ``profile`` - where the batch-1 dream step's time goes: time, FLOPs and GFLOP/s per network

Each figure is the median over ``--repeats`` after ``--warmup`` untimed runs. Besides wall time each
row has ``cpu_*``: the process's CPU time for the same work. On a machine shared with other jobs,
wall time inflates with the load while CPU time at ``--threads 1`` barely moves, so A/B comparisons
(``--path fast`` vs ``--path plain``) use it; with more threads CPU time also counts OpenMP spinning.
Results print as a table and are written as JSON with the torch version, thread count, dtype, path,
load average and the process's peak RSS.
"""
from __future__ import annotations

import argparse
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

WORKLOADS = ("dream", "imagine", "train", "collect", "profile")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("workloads", nargs="*", default=["dream"], choices=WORKLOADS + ("all",),
                   help="which benchmarks to run (default: dream)")
    p.add_argument("--preset", default="paper", choices=("tiny", "cpu", "paper"))
    p.add_argument("--checkpoint", default=None, help="load weights from a checkpoint folder instead of a preset")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="float32", choices=("float32", "bf16"),
                   help="bf16 = autocast; float32 = the plain reference path")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    p.add_argument("--path", default="fast", choices=("fast", "plain"),
                   help="fast = channels-last inference and split batch-1 linears, same results (model/nets/fastpath.py); plain = straightforward NCHW float32")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch", type=int, nargs="*", default=None,
                   help="batch sizes (imagine: default 32 86; train: sequences, default 4 32)")
    p.add_argument("--horizon", type=int, default=15)
    p.add_argument("--steps", type=int, default=50, help="dream steps per timed repeat")
    p.add_argument("--train-parts", nargs="*", default=["tokenizer", "world_model", "actor_critic"])
    p.add_argument("--workers", type=int, default=2, help="collect: parallel workers to compare with 1")
    p.add_argument("--env", default="crafter")
    p.add_argument("--json", default=None, help="write results here (default: runs/bench/<time>.json)")
    p.add_argument("--compile", action="store_true", help="torch.compile the hot modules")


class Timings(list):
    """Wall seconds per repeat (the list itself) and the process CPU seconds per repeat (``.cpu``)."""

    cpu: list[float]


def timed(fn: Callable[[], Any], repeats: int, warmup: int, sync: Callable[[], None]) -> Timings:
    """Wall (and CPU) seconds of ``fn`` per repeat, after untimed warm-up runs."""
    for _ in range(warmup):
        fn()
    sync()
    out = Timings()
    out.cpu = []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        sync()
        out.append(time.perf_counter() - t0)
        out.cpu.append(time.process_time() - c0)
    return out


def peak_rss_gib() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / (1024 ** 2) if sys.platform != "darwin" else kb / (1024 ** 3)


def run(args: argparse.Namespace) -> int:
    import os

    import torch

    from app import bench_workloads as wl
    from model.nets import fastpath
    from model.device import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    fastpath.set_enabled(args.path == "fast")
    load_before = os.getloadavg()[0]
    device = resolve_device(args.device)
    workloads = list(WORKLOADS) if "all" in args.workloads else args.workloads
    ctx = wl.BenchContext.build(args, device)
    rows: list[dict[str, Any]] = []
    for name in workloads:
        for row in getattr(wl, f"bench_{name}")(ctx):
            row.setdefault("peak_rss_gib", round(peak_rss_gib(), 2))
            rows.append(row)
            print(format_row(row), flush=True)
    meta = {
        "torch": torch.__version__, "threads": torch.get_num_threads(), "device": str(device),
        "dtype": args.dtype, "path": args.path, "compile": args.compile, "preset": args.preset,
        "checkpoint": args.checkpoint, "load_avg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "machine": platform.machine(), "processor": platform.processor(), "repeats": args.repeats,
        "command": "deltaplay bench " + " ".join(sys.argv[2:] if sys.argv[1:2] == ["bench"] else sys.argv[1:]),
    }
    from model.train.run_dir import write_json

    out = write_json(args.json or Path("runs/bench") / time.strftime("%Y%m%d-%H%M%S.json"),
                     {"meta": meta, "results": rows})
    print(f"\nwrote {out}  (torch {meta['torch']}, {meta['threads']} threads, {meta['device']}, {args.dtype}, "
          f"{args.path} path, load average {meta['load_avg_1min']})")
    return 0


def format_row(row: dict[str, Any]) -> str:
    keys = [k for k in row if k not in ("workload", "what")]
    vals = "  ".join(f"{k}={row[k]}" for k in keys)
    return f"{row['workload']:<8} {row['what']:<40} {vals}"


def median(xs: list[float]) -> float:
    return statistics.median(xs)
