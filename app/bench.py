"""`deltaplay bench`: speed and memory of the hot paths, one workload per sub-benchmark.

Workloads match the reference table in the README so figures compare one to one:

* ``dream``   - one human step in the dream at batch 1 (K tokens with the KV cache + decode + I-token)
* ``imagine`` - batched imagination with the actor acting, batch B, horizon H (frames/s)
* ``train``   - one optimiser step of the tokenizer, the world model and the actor-critic
* ``branches`` - N futures of one batch-1 dream state, sampled in one batch (the play grid), against N one by one
* ``collect`` - real env steps/s with 1 and N worker processes
* ``profile`` - where the batch-1 dream step's time goes: time, FLOPs and GFLOP/s per network

Each figure is the median over ``--repeats`` after ``--warmup`` untimed runs. Besides wall time each
row has ``cpu_*``: the process's CPU time for the same work. On a machine shared with other jobs,
wall time inflates with the load while CPU time at ``--threads 1`` barely moves, so A/B comparisons
(``--path fast`` vs ``--path plain``) use it; with more threads CPU time also counts OpenMP spinning.
Results print as a table and are written as JSON with the torch version, thread count, dtype, path,
load average and the process's peak RSS.

Models are built from a preset (random weights: speed does not depend on their values) or loaded
from a checkpoint. Inputs are random frames: the dream's cost does not depend on what it draws.
:func:`benchmark_dream` times the same step through the play engine instead (``deltaplay eval``'s feel part).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import platform
import resource
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from app import bench_page, bench_reference
from model.config import IMAGE_SIZE, Config, get_preset
from model.data.policies import Agent
from model.device import autocast, resolve_device

WORKLOADS = ("dream", "imagine", "branches", "train", "collect", "profile")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("workloads", nargs="*", default=["dream"], choices=WORKLOADS + ("all", bench_reference.NAME, bench_page.NAME),
                   help="which benchmarks to run (default: dream); side-by-side: the published code's and ours, "
                        "alternating (app/bench_reference.py); page: play through the web page in Chromium, "
                        "optionally while a training run goes (app/bench_page.py)")
    p.add_argument("--preset", default="paper", choices=("tiny", "cpu", "paper"))
    p.add_argument("--checkpoint", default=None, help="load weights from a checkpoint folder instead of a preset")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="float32", choices=("float32", "bf16"),
                   help="bf16: autocast for training steps, and for the conv nets of dreams (model.device.image_autocast); "
                        "float32: no autocast")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    p.add_argument("--path", default="fast", choices=("fast", "plain"),
                   help="fast = channels-last inference and split batch-1 linears, same results (model/nets/fastpath.py); plain = straightforward NCHW float32")
    p.add_argument("--branches", type=int, default=8, help="branches: futures per grid")
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
    bench_reference.add_arguments(p)
    p.add_argument("--page-train", default=None, choices=("tiny", "cpu", "paper"),
                   help="page: start a Crafter training run of this preset from the Train tab first")
    p.add_argument("--hold", type=float, default=5.0, help="page: seconds a move key is held per repeat")


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


def format_row(row: dict[str, Any]) -> str:
    keys = [k for k in row if k not in ("workload", "what")]
    vals = "  ".join(f"{k}={row[k]}" for k in keys)
    return f"{row['workload']:<8} {row['what']:<40} {vals}"


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def run(args: argparse.Namespace) -> int:
    from model.nets import fastpath

    if bench_reference.NAME in args.workloads:
        return bench_reference.run(args)  # checks the reference folder first, with a plain-words error
    if bench_page.NAME in args.workloads:
        return bench_page.run(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    fastpath.set_enabled(args.path == "fast")
    load_before = os.getloadavg()[0]
    device = resolve_device(args.device)
    workloads = list(WORKLOADS) if "all" in args.workloads else args.workloads
    ctx = BenchContext.build(args, device)
    rows: list[dict[str, Any]] = []
    for name in workloads:
        for row in BENCHES[name](ctx):
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


@dataclass
class BenchContext:
    args: argparse.Namespace
    cfg: Config
    device: torch.device
    models: dict[str, torch.nn.Module]

    @classmethod
    def build(cls, args: argparse.Namespace, device: torch.device) -> "BenchContext":
        if args.checkpoint:
            from model.checkpoint import load_checkpoint

            ck = load_checkpoint(args.checkpoint, device)
            cfg, models = ck.cfg, dict(ck.models)
        else:
            from model.checkpoint import build_model

            cfg = get_preset(args.preset, args.env)
            models = {n: build_model(n, cfg).to(device) for n in ("tokenizer", "world_model", "actor_critic")}
        if getattr(args, "compile", False):
            compile_convnets(models)
        return cls(args, cfg, device, models)

    def autocast(self):
        return autocast(self.device, "bf16") if self.args.dtype == "bf16" else contextlib.nullcontext()

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def frames(self, *shape: int) -> torch.Tensor:
        s = IMAGE_SIZE
        return torch.rand(*shape, 3, s, s, device=self.device)

    def actions(self, *shape: int) -> torch.Tensor:
        return torch.randint(0, self.cfg.env.num_actions, shape, device=self.device)

    def dream_env(self):
        """A batched dream of the tokenizer and the world model, at the benchmark's dtype."""
        from model.nets.imagination import DreamEnv

        return DreamEnv(self.models["tokenizer"].eval(), self.models["world_model"].eval(),
                        autocast_mode="bf16" if self.args.dtype == "bf16" else None)


def compile_convnets(models: dict[str, torch.nn.Module]) -> None:
    """torch.compile the conv stacks (where the FLOPs are). Optional: compiling takes minutes and need not
    beat eager channels-last on a CPU."""
    tok, wm, ac = models.get("tokenizer"), models.get("world_model"), models.get("actor_critic")
    for owner, names in ((tok, ("encoder", "decoder", "frame_cnn")), (wm, ("frame_cnn",)),
                         (getattr(ac, "model", None), ("cnn",))):
        for name in names:
            if owner is not None and isinstance(getattr(owner, name, None), torch.nn.Module):
                setattr(owner, name, torch.compile(getattr(owner, name)))


def _dream(ctx: BenchContext, batch: int):
    """A dream primed on random frames, ready to step."""
    dream = ctx.dream_env()
    t0 = max(2, ctx.cfg.actor_critic.burn_in)
    dream.reset(ctx.frames(batch, t0), ctx.actions(batch, t0 - 1))
    return dream


def bench_dream(ctx: BenchContext) -> list[dict[str, Any]]:
    """Batch-1 latency of one human step, measured over ``--steps`` consecutive steps so the
    world model's sliding window (and its re-priming) is included as a player would feel it."""
    a = ctx.args
    dream = _dream(ctx, 1)
    act = ctx.actions(1)

    def run() -> None:
        for _ in range(a.steps):
            dream.step(act)

    secs = timed(run, a.repeats, a.warmup, ctx.sync)
    ms = 1000 * median(secs) / a.steps
    return [{"workload": "dream", "what": f"{ctx.cfg.preset} batch 1 step", "ms_per_step": round(ms, 2),
             "steps_per_s": round(1000 / ms, 1), "cpu_ms_per_step": round(1000 * median(secs.cpu) / a.steps, 2)}]


def bench_branches(ctx: BenchContext) -> list[dict[str, Any]]:
    """The futures grid: ``--branches`` next steps of one state (copy of the cache, K tokens, decode), in one
    batch and, for the ratio, one at a time from the same state."""
    a = ctx.args
    dream = _dream(ctx, 1)
    dream.step(ctx.actions(1))
    n, act = a.branches, int(ctx.actions(1)[0])
    batched = timed(lambda: dream.branch(act, n), a.repeats, a.warmup, ctx.sync)
    single = timed(lambda: [dream.branch(act, 1) for _ in range(n)], a.repeats, a.warmup, ctx.sync)
    return [{"workload": "branches", "what": f"{ctx.cfg.preset} {n} futures of one state",
             "ms_per_grid": round(1000 * median(batched), 1), "cpu_ms_per_grid": round(1000 * median(batched.cpu), 1),
             "ms_one_by_one": round(1000 * median(single), 1),
             "batching_speedup": round(median(single) / median(batched), 2)}]


def bench_imagine(ctx: BenchContext) -> list[dict[str, Any]]:
    """Imagination as the actor-critic sees it: the actor picks, the dream answers, H steps."""
    a = ctx.args
    ac = ctx.models["actor_critic"].eval()
    rows = []
    for b in a.batch or [32, 86]:
        dream = _dream(ctx, b)

        def run() -> None:
            with torch.inference_mode():
                agent = Agent(ac)
                obs = dream.frame
                for _ in range(a.horizon):
                    obs, _, _ = dream.step(agent.act(obs))

        secs = timed(run, max(1, a.repeats // 2), 1, ctx.sync)
        fps = b * a.horizon / median(secs)
        rows.append({"workload": "imagine", "what": f"{ctx.cfg.preset} batch {b} horizon {a.horizon}",
                     "frames_per_s": round(fps, 1), "s_per_rollout": round(median(secs), 3),
                     "cpu_ms_per_frame": round(1000 * median(secs.cpu) / (b * a.horizon), 2)})
    return rows


def _optimiser_step(ctx: BenchContext, model: torch.nn.Module, loss: Callable[[], Any]) -> Callable[[], None]:
    """One AdamW step of ``model`` on ``loss()`` (a loss and its metrics), under the benchmark's autocast."""
    opt = torch.optim.AdamW(model.parameters(), lr=ctx.cfg.train.lr, weight_decay=ctx.cfg.train.weight_decay)

    def step() -> None:
        with ctx.autocast():
            value, _ = loss()
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()

    return step


def bench_train(ctx: BenchContext) -> list[dict[str, Any]]:
    """Training steps on random inputs, each with its FLOPs (convolutions and matrix products, forward and
    backward, by ``torch.utils.flop_counter``) and the share of the conv roof it reaches: how far a faster step
    could still go on this machine at this dtype."""
    from torch.utils.flop_counter import FlopCounterMode

    a, cfg = ctx.args, ctx.cfg
    roof = _conv_roof(ctx, "train")
    rows = []
    for part in a.train_parts:
        for b in a.batch or [4, 32]:
            step, per, unit = _train_step(ctx, part, b)
            secs = timed(step, a.repeats, a.warmup, ctx.sync)
            with FlopCounterMode(display=False) as counter:
                step()
            gflop = counter.get_total_flops() / 1e9
            rows.append({"workload": "train", "what": f"{cfg.preset} {part} batch {b}x{_seq(cfg, part)}",
                         f"ms_per_{unit}": round(1000 * median(secs) / per, 2),
                         "s_per_step": round(median(secs), 3), f"cpu_ms_per_{unit}": round(1000 * median(secs.cpu) / per, 2),
                         f"gflop_per_{unit}": round(gflop / per, 3), "gflop_per_s": round(gflop / median(secs), 1),
                         "roof_pct": round(100 * gflop / median(secs) / roof["gflop_per_s"], 1),
                         "peak_rss_gib": round(peak_rss_gib(), 2)})
    return rows + [roof]


def _seq(cfg: Config, part: str) -> int:
    t = cfg.train
    return {"tokenizer": t.tokenizer_seq, "world_model": t.world_model_seq,
            "actor_critic": cfg.actor_critic.burn_in + 1}[part]


def _train_step(ctx: BenchContext, part: str, b: int) -> tuple[Callable[[], None], int, str]:
    """One optimiser step of ``part`` on random inputs; returns (fn, items per step, item unit)."""
    cfg, m = ctx.cfg, ctx.models
    L = _seq(cfg, part)
    if part == "tokenizer":
        tok = m["tokenizer"].train()
        frames, actions = ctx.frames(b, L), ctx.actions(b, L)
        prev, nxt = frames[:, :-1].flatten(0, 1), frames[:, 1:].flatten(0, 1)
        act = actions[:, :-1].flatten()
        return _optimiser_step(ctx, tok, lambda: tok.compute_loss(prev, act, nxt)), b * (L - 1), "pair"
    if part == "world_model":
        wm = m["world_model"].train()
        k, v = m["tokenizer"].tokens_per_frame, m["tokenizer"].vocab_size
        frames, actions = ctx.frames(b, L), ctx.actions(b, L)
        tokens = torch.randint(0, v, (b, L, k), device=ctx.device)
        rewards = torch.zeros(b, L, device=ctx.device)
        ends = torch.zeros(b, L, dtype=torch.long, device=ctx.device)
        mask = torch.ones(b, L, dtype=torch.bool, device=ctx.device)
        loss = lambda: wm.compute_loss(frames, actions, tokens, rewards, ends, mask)  # noqa: E731
        return _optimiser_step(ctx, wm, loss), b * L, "frame"
    if part == "actor_critic":
        ac = m["actor_critic"].train()
        dream = ctx.dream_env()
        frames, actions = ctx.frames(b, L), ctx.actions(b, L - 1)
        return _optimiser_step(ctx, ac, lambda: ac.imagine_and_loss(dream, frames, actions)), 1, "step"
    raise ValueError(f"unknown train part {part!r} (tokenizer|world_model|actor_critic)")


def bench_collect(ctx: BenchContext) -> list[dict[str, Any]]:
    from model.data.collector import benchmark_collect

    a = ctx.args
    rows = []
    for workers in sorted({1, a.workers}):
        sps = benchmark_collect(a.env, workers, a.steps * 20)
        rows.append({"workload": "collect", "what": f"{a.env} {workers} worker(s)", "steps_per_s": round(sps, 1)})
    return rows


def _profile_parts(ctx: BenchContext) -> dict[str, list[torch.nn.Module]]:
    """The modules a batch-1 dream step (and the actor's choice) spends its time in, by part."""
    tok, wm, ac = ctx.models["tokenizer"], ctx.models["world_model"], ctx.models["actor_critic"]
    parts = {"Δ-decoder (without its frame CNN)": [tok.decoder],
             "Δ-decoder's frame CNN over x_t": [getattr(tok, "frame_cnn", None)],
             "I-token CNN": [getattr(wm, "frame_cnn", None)],
             "transformer (K token passes, KV cache)": [*wm.blocks, wm.ln_f],
             "world-model heads": [wm.head_tokens, wm.head_reward, wm.head_end],
             "actor-critic (CNN + LSTM)": [getattr(ac, "model", ac)]}
    return {k: [m for m in v if m is not None] for k, v in parts.items() if any(m is not None for m in v)}


def bench_profile(ctx: BenchContext) -> list[dict[str, Any]]:
    """Where the batch-1 dream step's time goes: wall and CPU time and FLOPs (convs, matmuls,
    attention) per part, timed by forward hooks over ``--steps`` steps, each followed by the actor's
    choice as in imagination; "other" is the rest (embeddings, sampling, glue). Also a large
    channels-last 3x3 conv alone: the GFLOP/s one core reaches here, the roof for the parts."""
    from torch.utils.flop_counter import FlopCounterMode

    a = ctx.args
    dream, agent = _dream(ctx, 1), Agent(ctx.models["actor_critic"].eval())
    parts = _profile_parts(ctx)
    acc = {k: [0.0, 0.0, 0] for k in [*parts, "total"]}  # wall s, cpu s, flops
    counter: list[FlopCounterMode | None] = [None]
    started: dict[int, tuple[float, float, int]] = {}

    def now() -> tuple[float, float, int]:
        ctx.sync()
        return time.perf_counter(), time.process_time(), counter[0].get_total_flops() if counter[0] else 0

    def pre(m, _inp) -> None:
        started[id(m)] = now()

    def post_for(part: str):
        def post(m, _inp, _out) -> None:
            for i, (x0, x1) in enumerate(zip(started.pop(id(m)), now())):
                acc[part][i] += x1 - x0
        return post

    hooks = [h for part, mods in parts.items() for m in mods
             for h in (m.register_forward_pre_hook(pre), m.register_forward_hook(post_for(part)))]
    wm = ctx.models["world_model"]
    lean, lean_post = wm._trunk_token, post_for("transformer (K token passes, KV cache)")

    def timed_lean(x, cache, pos):  # the single-token passes call no block module: time them here
        pre(wm, None)
        out = lean(x, cache, pos)
        lean_post(wm, None, None)
        return out

    wm._trunk_token = timed_lean

    def steps(n: int) -> None:
        t0 = now()
        with torch.inference_mode():
            for _ in range(n):
                dream.step(agent.act(dream.frame))
        for i, (x0, x1) in enumerate(zip(t0, now())):
            acc["total"][i] += x1 - x0

    try:  # the dream runs at the benchmark's dtype (its conv nets, as in play), the actor in float32
        agent.start(1)
        steps(a.warmup + 1)
        with FlopCounterMode(display=False) as counter[0]:
            steps(1)
        flops = {k: v[2] for k, v in acc.items()}  # of that one step
        counter[0] = None
        for v in acc.values():
            v[:] = [0.0, 0.0, 0]
        steps(a.steps)
    finally:
        for h in hooks:
            h.remove()
        del wm._trunk_token
    acc["other"] = [acc["total"][i] - sum(acc[k][i] for k in parts) for i in range(2)] + [0]
    flops["other"] = flops["total"] - sum(flops[k] for k in parts)
    rows = []
    for name in [*parts, "other", "total"]:
        wall, cpu = (1000 * x / a.steps for x in acc[name][:2])
        rows.append({"workload": "profile", "what": f"{ctx.cfg.preset} dream step + actor: {name}",
                     "wall_ms": round(wall, 2), "cpu_ms": round(cpu, 2),
                     "share_pct": round(100 * acc[name][0] / acc["total"][0], 1), "gflop": round(flops[name] / 1e9, 3),
                     "gflop_per_s": round(flops[name] / 1e6 / wall, 1) if wall > 0 else None})
    return rows + [_conv_roof(ctx)]


def _conv_roof(ctx: BenchContext, workload: str = "profile") -> dict[str, Any]:
    """GFLOP/s of one 128->128 3x3 conv at 16x16, batch 16, channels-last, at the benchmark's dtype: what a
    well-shaped conv reaches (with ``--dtype bf16``, the bf16 matrix units where the CPU has them)."""
    conv = torch.nn.Conv2d(128, 128, 3, padding=1).to(ctx.device)
    x = torch.rand(16, 128, 16, 16, device=ctx.device).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), ctx.autocast():
        secs = timed(lambda: conv(x), 10, 3, ctx.sync)
    gflop = 2 * 128 * 128 * 9 * 16 * 16 * 16 / 1e9
    return {"workload": workload, "what": f"roof: 3x3 conv 128->128, 16x16, batch 16, NHWC, {ctx.args.dtype}",
            "wall_ms": round(1000 * median(secs), 2), "cpu_ms": round(1000 * median(secs.cpu), 2),
            "gflop": round(gflop, 3), "gflop_per_s": round(gflop / median(secs), 1)}


BENCHES: dict[str, Callable[[BenchContext], list[dict[str, Any]]]] = {
    "dream": bench_dream, "imagine": bench_imagine, "branches": bench_branches, "train": bench_train,
    "collect": bench_collect,
    "profile": bench_profile}


def benchmark_dream(checkpoint_or_preset: str | Path | None = "tiny", steps: int = 50, device: str = "auto",
                    warmup: int = 3, env: str | None = None, seed: int = 0) -> dict[str, float]:
    """Speed of one human step in the dream at batch 1 (tokens with the KV cache, decode, I-token and
    the periodic re-priming at the default horizon), as a player feels it. A preset name builds
    untrained models at that size; anything else is a checkpoint/run folder (None: the bundled one)."""
    from app.engine import ModelBundle, PlaySession

    if isinstance(checkpoint_or_preset, str) and checkpoint_or_preset in ("tiny", "cpu", "paper"):
        bundle = ModelBundle.from_preset(checkpoint_or_preset, env=env, device=device)
    else:
        bundle = ModelBundle.load(checkpoint_or_preset, device=device)
    session = PlaySession(bundle, shadow=False, seed=seed)
    session.reset(seed=seed)
    rng = np.random.default_rng(seed)
    actions = rng.integers(0, len(session.action_names), size=warmup + steps)
    sync = torch.cuda.synchronize if bundle.device.type == "cuda" else (lambda: None)
    for a in actions[:warmup]:
        session.step(int(a))
    sync()
    t0 = time.perf_counter()
    for a in actions[warmup:]:
        session.step(int(a))
    sync()
    elapsed = time.perf_counter() - t0
    session.close()
    return {"ms_per_step": 1000.0 * elapsed / steps, "steps_per_s": steps / elapsed, "steps": steps,
            "device": str(bundle.device), "horizon": session.horizon}
