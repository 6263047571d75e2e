"""The workloads behind `deltaplay bench`; each returns table rows (dicts).

Models are built from a preset (random weights: speed does not depend on their values) or loaded
from a checkpoint. Inputs are random frames: the dream's cost does not depend on what it draws.
"""
from __future__ import annotations

import argparse
import contextlib
import time
from dataclasses import dataclass
from typing import Any

import torch

from app.bench import median, peak_rss_gib, timed
from model.config import Config, get_preset
from model.device import autocast


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
            cfg = get_preset(args.preset, args.env)
            if args.env != "crafter":
                from model.data.envs import num_actions

                cfg.env.num_actions = num_actions(args.env)
            models = build_models(cfg, device)
        if getattr(args, "compile", False):
            compile_convnets(models)
        return cls(args, cfg, device, models)

    def autocast(self):
        return autocast(self.device, "bf16") if self.args.dtype == "bf16" else contextlib.nullcontext()

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def frames(self, *shape: int) -> torch.Tensor:
        s = self.cfg.env.image_size
        return torch.rand(*shape, 3, s, s, device=self.device)

    def actions(self, *shape: int) -> torch.Tensor:
        return torch.randint(0, self.cfg.env.num_actions, shape, device=self.device)


def build_models(cfg: Config, device: torch.device) -> dict[str, torch.nn.Module]:
    from model.nets.actor_critic import ActorCritic
    from model.nets.tokenizer import build_tokenizer
    from model.nets.world_model import WorldModel

    a = cfg.env.num_actions
    tok = build_tokenizer(cfg.tokenizer, a)
    wm = WorldModel(cfg.world_model, tok.tokens_per_frame, tok.vocab_size, a, layout=tok.kind)
    ac = ActorCritic(cfg.actor_critic, a, cfg.env.image_size)
    return {k: m.to(device) for k, m in (("tokenizer", tok), ("world_model", wm), ("actor_critic", ac))}


def compile_convnets(models: dict[str, torch.nn.Module]) -> None:
    """torch.compile the conv stacks (where the FLOPs are). Optional: on a 2-core AVX2 CPU it took
    ~3 minutes to compile the decoder and ran no faster than eager channels-last (docs/benchmarks.md)."""
    tok, wm, ac = models.get("tokenizer"), models.get("world_model"), models.get("actor_critic")
    for owner, names in ((tok, ("encoder", "decoder", "frame_cnn")), (wm, ("frame_cnn",)),
                         (getattr(ac, "model", None), ("cnn",))):
        for name in names:
            if owner is not None and isinstance(getattr(owner, name, None), torch.nn.Module):
                setattr(owner, name, torch.compile(getattr(owner, name)))


def _dream(ctx: BenchContext, batch: int):
    from model.nets.imagination import DreamEnv

    dream = DreamEnv(ctx.models["tokenizer"].eval(), ctx.models["world_model"].eval(),
                     autocast_mode="bf16" if ctx.args.dtype == "bf16" else None)
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


def bench_imagine(ctx: BenchContext) -> list[dict[str, Any]]:
    """Imagination as the actor-critic sees it: the actor picks, the dream answers, H steps."""
    a = ctx.args
    ac = ctx.models["actor_critic"].eval()
    rows = []
    for b in a.batch or [32, 86]:
        dream = _dream(ctx, b)

        def run() -> None:
            with torch.inference_mode():
                ac.reset(b)
                obs = dream.frame
                for _ in range(a.horizon):
                    obs, _, _ = dream.step(ac.act(obs))

        secs = timed(run, max(1, a.repeats // 2), 1, ctx.sync)
        fps = b * a.horizon / median(secs)
        rows.append({"workload": "imagine", "what": f"{ctx.cfg.preset} batch {b} horizon {a.horizon}",
                     "frames_per_s": round(fps, 1), "s_per_rollout": round(median(secs), 3),
                     "cpu_ms_per_frame": round(1000 * median(secs.cpu) / (b * a.horizon), 2)})
    return rows


def _optimizer(m: torch.nn.Module, cfg: Config) -> torch.optim.Optimizer:
    return torch.optim.AdamW(m.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)


def bench_train(ctx: BenchContext) -> list[dict[str, Any]]:
    a, cfg = ctx.args, ctx.cfg
    rows = []
    for part in a.train_parts:
        for b in a.batch or [4, 32]:
            step, per, unit = _train_step(ctx, part, b)
            secs = timed(step, a.repeats, a.warmup, ctx.sync)
            rows.append({"workload": "train", "what": f"{cfg.preset} {part} batch {b}x{_seq(cfg, part)}",
                         f"ms_per_{unit}": round(1000 * median(secs) / per, 2),
                         "s_per_step": round(median(secs), 3), f"cpu_ms_per_{unit}": round(1000 * median(secs.cpu) / per, 2),
                         "peak_rss_gib": round(peak_rss_gib(), 2)})
    return rows


def _seq(cfg: Config, part: str) -> int:
    t = cfg.train
    return {"tokenizer": t.tokenizer_seq, "world_model": t.world_model_seq,
            "actor_critic": cfg.actor_critic.burn_in + 1}[part]


def _train_step(ctx: BenchContext, part: str, b: int):
    """One optimiser step of ``part`` on random inputs; returns (fn, items per step, item unit)."""
    cfg, m = ctx.cfg, ctx.models
    L = _seq(cfg, part)
    if part == "tokenizer":
        tok = m["tokenizer"].train()
        opt = _optimizer(tok, cfg)
        frames, actions = ctx.frames(b, L), ctx.actions(b, L)
        prev, nxt = frames[:, :-1].flatten(0, 1), frames[:, 1:].flatten(0, 1)
        act = actions[:, :-1].flatten()

        def step() -> None:
            with ctx.autocast():
                loss, _ = tok.compute_loss(prev, act, nxt)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return step, b * (L - 1), "pair"
    if part == "world_model":
        wm = m["world_model"].train()
        opt = _optimizer(wm, cfg)
        k, v = m["tokenizer"].tokens_per_frame, m["tokenizer"].vocab_size
        frames, actions = ctx.frames(b, L), ctx.actions(b, L)
        tokens = torch.randint(0, v, (b, L, k), device=ctx.device)
        rewards = torch.zeros(b, L, device=ctx.device)
        ends = torch.zeros(b, L, dtype=torch.long, device=ctx.device)
        mask = torch.ones(b, L, dtype=torch.bool, device=ctx.device)

        def step() -> None:
            with ctx.autocast():
                loss, _ = wm.compute_loss(frames, actions, tokens, rewards, ends, mask)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return step, b * L, "frame"
    if part == "actor_critic":
        from model.nets.imagination import DreamEnv

        ac = m["actor_critic"].train()
        opt = _optimizer(ac, cfg)
        dream = DreamEnv(m["tokenizer"].eval(), m["world_model"].eval(),
                         autocast_mode="bf16" if ctx.args.dtype == "bf16" else None)
        frames, actions = ctx.frames(b, L), ctx.actions(b, L - 1)

        def step() -> None:
            with ctx.autocast():
                loss, _ = ac.imagine_and_loss(dream, frames, actions)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return step, 1, "step"
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
    dream, ac = _dream(ctx, 1), ctx.models["actor_critic"].eval()
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

    def steps(n: int) -> None:
        t0 = now()
        with torch.inference_mode():
            for _ in range(n):
                dream.step(ac.act(dream.frame))
        for i, (x0, x1) in enumerate(zip(t0, now())):
            acc["total"][i] += x1 - x0

    try:
        with ctx.autocast():
            ac.reset(1)
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


def _conv_roof(ctx: BenchContext) -> dict[str, Any]:
    """GFLOP/s of one 128->128 3x3 conv at 16x16, batch 16, channels-last: what a well-shaped conv reaches."""
    conv = torch.nn.Conv2d(128, 128, 3, padding=1).to(ctx.device)
    x = torch.rand(16, 128, 16, 16, device=ctx.device).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        secs = timed(lambda: conv(x), 10, 3, ctx.sync)
    gflop = 2 * 128 * 128 * 9 * 16 * 16 * 16 / 1e9
    return {"workload": "profile", "what": "roof: 3x3 conv 128->128, 16x16, batch 16, NHWC",
            "wall_ms": round(1000 * median(secs), 2), "cpu_ms": round(1000 * median(secs.cpu), 2),
            "gflop": round(gflop, 3), "gflop_per_s": round(gflop / median(secs), 1)}
