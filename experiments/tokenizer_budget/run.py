"""The tokenizer budget experiment: which tokenizer learns Crafter best in a fixed CPU budget?

Three tokenizers train on the same random-policy Crafter transitions, with the same batches (the batch of
step i is a function of i alone), batch size, optimiser and budget each:

* ``cpu``   - the ``cpu`` preset's Δ-tokenizer (residual decoder that sees x_{t-1});
* ``paper`` - the published Δ-tokenizer design at the same width (every other field from the ``paper``
  preset, its x_{t-1} CNN scaled with the width as in that preset);
* ``iris``  - the IRIS-style frame-only tokenizer, 16 tokens per frame, the ``cpu`` preset's widths.

Each model's budget runs on its own clock (by default the process CPU time inside its training steps,
which a busy machine does not inflate). Held-out transitions come from other env seeds than the training
ones. ``experiments/tokenizer_budget/cli.py`` is the command line and says what each option does.
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from app.cli import UserError
from model.config import Config, TokenizerConfig, cpu, paper
from model.eval.parts import error_summary, frame_mse, psnr_from_mse, run_episodes
from model.data.frames import to_tensor, to_uint8

MODELS = ("cpu", "paper", "iris")
LABELS = {"cpu": "cpu Δ (residual)", "paper": "paper Δ", "iris": "IRIS-16"}
ENV = "crafter"
SCALE = 4  # upscaling of the worst-frames strip
PROGRESS_EVERY_S = 30.0


def say(quiet: bool, text: str) -> None:
    """A progress line on stderr, unless ``quiet``."""
    if not quiet:
        print(text, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------- data

@dataclass
class Transitions:
    """Episodes laid end to end: ``actions[i]`` is the action taken in ``frames[i]`` and leads to
    ``frames[i + 1]``; it is -1 on each episode's last frame (no transition starts there)."""

    frames: np.ndarray  # (M, H, W, 3) uint8
    actions: np.ndarray  # (M,) int64
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.starts = np.flatnonzero(self.actions >= 0)  # index of x_{t-1} of each transition

    def __len__(self) -> int:
        return len(self.starts)

    def pairs(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Transitions ``idx`` -> (x_{t-1}, a_{t-1}, x_t) as uint8/int64 arrays."""
        s = self.starts[idx]
        return self.frames[s], self.actions[s], self.frames[s + 1]

    def subset(self, idx: np.ndarray) -> "Transitions":
        """Transitions ``idx`` alone, as one-step episodes."""
        prev, act, nxt = self.pairs(idx)
        frames = np.stack([prev, nxt], axis=1).reshape(-1, *prev.shape[1:])
        return Transitions(frames, np.stack([act, np.full_like(act, -1)], axis=1).reshape(-1), dict(self.meta))

    def tensors(self, idx: np.ndarray, device: torch.device | str = "cpu"):
        prev, act, nxt = self.pairs(idx)
        return to_tensor(prev, device), torch.as_tensor(act, device=device).long(), to_tensor(nxt, device)


def collect_transitions(first_seed: int, count: int, episode_steps: int, envs_per_round: int = 16,
                        quiet: bool = False, label: str = "data", seed_limit: int | None = None) -> Transitions:
    """``count`` random-policy transitions from consecutive seeds ``first_seed``.., each episode cut
    after ``episode_steps`` steps (or at death), ``envs_per_round`` envs stepped in lockstep. Seeds
    never reach ``seed_limit`` (where the held-out seeds start)."""
    from model.data.policies import RandomPolicy
    from model.data.envs import num_actions

    policy = RandomPolicy(num_actions(ENV), seed=first_seed)
    frames, actions, seeds, total, seed = [], [], [], 0, first_seed
    while total < count:
        n = max(1, min(envs_per_round, math.ceil((count - total) / episode_steps)))
        if seed_limit is not None and seed + n > seed_limit:
            raise UserError(f"{label}: {count} transitions need seeds beyond {seed_limit - 1}, where the "
                                  "held-out seeds start; raise --seed or --episode-steps")
        for ep in run_episodes(ENV, policy, list(range(seed, seed + n)), max_steps=episode_steps):
            keep = int(min(ep.length, count - total))
            if keep <= 0:
                break
            frames.append(ep.frames[:keep + 1])
            actions.append(np.append(np.asarray(ep.actions[:keep], np.int64), -1))
            seeds.append(int(ep.seed))
            total += keep
        seed += n
        say(quiet, f"  {label}: {total}/{count} transitions from {len(seeds)} episodes")
    meta = {"first_seed": int(first_seed), "last_seed": int(seeds[-1]), "episodes": len(seeds),
            "transitions": int(total), "episode_steps": int(episode_steps), "policy": "random", "env": ENV}
    return Transitions(np.concatenate(frames), np.concatenate(actions), meta)


def load_or_collect(data_dir: str | Path | None, split: str, first_seed: int, count: int, episode_steps: int,
                    quiet: bool = False, seed_limit: int | None = None) -> Transitions:
    """The cached set in ``data_dir`` if one was collected with these settings, else a fresh one
    (then cached). ``data_dir=None`` never caches."""
    name = f"{ENV}_{split}_seed{first_seed}_n{count}_ep{episode_steps}.npz"
    path = Path(data_dir) / name if data_dir else None
    if path is not None and path.is_file():
        with np.load(path, allow_pickle=False) as d:
            data = Transitions(d["frames"], d["actions"], json.loads(str(d["meta"][()])))
        if len(data) == count and (seed_limit is None or data.meta["last_seed"] < seed_limit):
            say(quiet, f"  {split}: {len(data)} cached transitions from {path}")
            data.meta["cache"] = str(path)
            return data
    t0 = time.perf_counter()
    data = collect_transitions(first_seed, count, episode_steps, quiet=quiet, label=split, seed_limit=seed_limit)
    data.meta["collect_s"] = round(time.perf_counter() - t0, 1)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, frames=data.frames, actions=data.actions, meta=np.array(json.dumps(data.meta)))
        tmp.replace(path)
        data.meta["cache"] = str(path)
    return data


# ------------------------------------------------------------------------------------------- models

def tokenizer_configs(width: int | None = None) -> dict[str, TokenizerConfig]:
    """The three contenders at one conv width (default: the cpu preset's). The x_{t-1} CNN keeps
    each preset's ratio to the base width (cpu 16/32, paper 64/64)."""
    c, p = cpu().tokenizer, paper().tokenizer
    w = width or c.channels
    scaled = lambda cfg: max(4, round(cfg.frame_cnn_channels * w / cfg.channels))  # noqa: E731
    cpu_cfg = dataclasses.replace(c, channels=w, frame_cnn_channels=scaled(c))
    return {
        "cpu": cpu_cfg,
        "paper": dataclasses.replace(p, channels=w, frame_cnn_channels=scaled(p)),
        "iris": dataclasses.replace(cpu_cfg, kind="iris", tokens_per_frame=cpu().train.iris_tokens),
    }


def checkpoint_config(tok_cfg: TokenizerConfig) -> Config:
    """A cpu-preset Config carrying this tokenizer, so the checkpoint rebuilds it by itself."""
    cfg = cpu()
    cfg.tokenizer = tok_cfg
    return cfg


@dataclass
class Arm:
    """One tokenizer in training, with its own optimiser and its own clocks."""

    name: str
    tok: torch.nn.Module
    opt: torch.optim.Optimizer | None = None
    steps: int = 0
    cpu_s: float = 0.0
    wall_s: float = 0.0
    window: dict[str, list[float]] = field(default_factory=dict)  # metrics since the last progress line
    curve: list[dict[str, float]] = field(default_factory=list)
    next_curve_s: float = 0.0
    run: str = ""  # JSON of the settings it was trained with (read back by --eval-only)

    def clock(self, kind: str) -> float:
        return self.cpu_s if kind == "cpu" else self.wall_s

    def step(self, prev, act, nxt, grad_clip: float) -> None:
        c0, w0 = time.process_time(), time.perf_counter()
        self.tok.train()
        loss, metrics = self.tok.compute_loss(prev, act, nxt)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in self.tok.parameters() if p.requires_grad], grad_clip)
        self.opt.step()
        self.cpu_s += time.process_time() - c0
        self.wall_s += time.perf_counter() - w0
        self.steps += 1
        for k in ("psnr", "codebook_entropy_bits"):
            self.window.setdefault(k, []).append(metrics[k])
        self.window.setdefault("loss", []).append(loss.item())

    def summary(self) -> str:
        """Steps, speed and the training metrics averaged since the last call."""
        w = {k: float(np.mean(v)) for k, v in self.window.items() if v}
        self.window = {}
        text = f"{self.name} {self.steps} steps ({self.steps / max(self.cpu_s, 1e-9):.2f}/cpu-s)"
        if not w:
            return text + " done"
        return text + f" loss {w['loss']:.4f} psnr {w['psnr']:.1f} H {w['codebook_entropy_bits']:.1f}b"


def batch_indices(seed: int, step: int, n: int, batch: int) -> np.ndarray:
    """The training batch of step ``step``: the same for every model, whatever the schedule."""
    return np.random.default_rng([seed, step]).integers(0, n, size=batch)


def train(arms: list[Arm], data: Transitions, *, budget_s: float, max_steps: int, batch: int, grad_clip: float,
          clock: str, schedule: str, seed: int, curve_every_s: float = 0.0, curve_data: Transitions | None = None,
          eval_batch: int = 64, quiet: bool = False, device: torch.device | str = "cpu") -> None:
    """Train every arm until its own clock reaches ``budget_s`` or it has done ``max_steps`` steps
    (0 = no cap). Learning-curve points (held-out PSNR of ``curve_data``) are taken on each arm's
    own clock every ``curve_every_s`` and are not charged to it."""
    def running(a: Arm) -> bool:
        return a.clock(clock) < budget_s and (max_steps <= 0 or a.steps < max_steps)

    def curve_point(a: Arm, final: bool = False) -> None:
        if curve_every_s <= 0 or curve_data is None or (a.curve and a.curve[-1]["steps"] == a.steps):
            return
        if not final and a.clock(clock) < a.next_curve_s:
            return
        s = error_summary(evaluate(a.tok, curve_data, eval_batch, device)[0])
        a.curve.append({"steps": a.steps, "clock_s": round(a.clock(clock), 1), "psnr_median": s["psnr_median"],
                        "psnr_of_mean_mse": s["psnr_of_mean_mse"]})
        while a.next_curve_s <= a.clock(clock):
            a.next_curve_s += curve_every_s

    order = [[a] for a in arms] if schedule == "sequential" else [arms]
    t_start = last = time.perf_counter()
    for group in order:
        step = 0
        while live := [a for a in group if running(a)]:
            for a in live:
                curve_point(a)
            prev, act, nxt = data.tensors(batch_indices(seed, step, len(data), batch), device)
            for a in live:
                a.step(prev, act, nxt, grad_clip)
            step += 1
            now = time.perf_counter()
            if now - last >= PROGRESS_EVERY_S:
                last = now
                left = max(0.0, max((budget_s - a.clock(clock)) / 60 for a in group))
                say(quiet, f"  [{(now - t_start) / 60:.1f} min] " + " | ".join(a.summary() for a in group)
                     + f" | {left:.1f} {clock}-min left per model")
        for a in group:
            curve_point(a, final=True)


# --------------------------------------------------------------------------------------- evaluation

@torch.inference_mode()
def evaluate(tok, data: Transitions, batch: int = 64, device: torch.device | str = "cpu",
             idx: np.ndarray | None = None, tokens: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame MSE of ``tok.reconstruct`` against x_t and the tokens, on transitions ``idx``
    (default: all); with ``tokens`` (a row per transition), x_t is decoded from those instead of its
    own. The model is left in eval mode."""
    tok.eval()
    idx = np.arange(len(data)) if idx is None else np.asarray(idx)
    mse, used = [], []
    for i in range(0, len(idx), batch):
        prev, act, nxt = data.tensors(idx[i:i + batch], device)
        if tokens is None:
            recon, tk = tok.reconstruct(prev, act, nxt)
        else:
            tk = tokens[i:i + batch].to(device)
            recon = tok.decode(prev, act, tk)
        mse.append(frame_mse(recon, nxt).cpu().numpy())
        used.append(tk.cpu())
    return np.concatenate(mse), torch.cat(used)


def shuffled_token_mse(tok, data: Transitions, tokens: torch.Tensor, batch: int = 64,
                       device: torch.device | str = "cpu", seed: int = 0) -> np.ndarray:
    """Per-frame MSE when each x_t is decoded from x_{t-1}, a_{t-1} and *another* held-out frame's
    tokens. Close to the real tokens' error means the decoder ignores its tokens (they carry no
    information: a collapsed posterior); the gap is what the tokens contribute."""
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    return evaluate(tok, data, batch, device, tokens=tokens[perm])[0]


def copy_mse(prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
    """The copy baseline x̂_t = x_{t-1}: per-frame MSE in [0, 1] units of uint8 (N, H, W, 3) pairs."""
    d = (nxt.astype(np.float32) - prev.astype(np.float32)) / 255.0
    return (d ** 2).reshape(len(d), -1).mean(1)


def code_stats(tokens: torch.Tensor, vocab_size: int) -> dict[str, Any]:
    """How much of the codebook the held-out tokens use: entropy of the pooled code histogram (bits),
    per token position its entropy and number of distinct codes (1 = a collapsed position that
    carries nothing), and their sum of entropies (an upper bound on the bits a frame really uses)."""
    from model.nets.tokenizer import codebook_usage

    usage = codebook_usage(tokens, vocab_size).double()  # (K, V)

    def entropy(counts: torch.Tensor) -> float:
        p = counts[counts > 0] / counts.sum()
        return max(0.0, float(-(p * p.log2()).sum()))  # not -0.0 for a collapsed position

    per_pos = [entropy(u) for u in usage]
    return {"entropy_bits": entropy(usage.sum(0)), "distinct_codes": int((usage.sum(0) > 0).sum()),
            "per_position_distinct": [int(x) for x in (usage > 0).sum(1)],
            "per_position_entropy_bits": per_pos, "used_bits_per_frame": float(sum(per_pos))}


def worst_strip(rows: list[np.ndarray], scale: int = SCALE) -> np.ndarray:
    """Rows of uint8 (N, H, W, 3) frames -> one (rows*H*scale, N*W*scale, 3) image, nearest upscaling."""
    img = np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)
    return img.repeat(scale, axis=0).repeat(scale, axis=1)


# ------------------------------------------------------------------------------------------- report

def _f(x: Any) -> str:
    if isinstance(x, float):
        return "-" if math.isnan(x) else f"{x:.2f}"
    return "-" if x is None else str(x)


def format_table(r: dict[str, Any]) -> str:
    head = ["model", "K", "bits/frame", "PSNR median", "mean", "of mean MSE", "worst 1%", "code H (bits)",
            "shuffled tokens", "codes per position", "steps", "steps/s"]
    rows = []
    for name, m in r["models"].items():
        h, c = m["heldout"], m["codes"]
        rows.append([m["label"], m["tokens_per_frame"], m["bits_per_frame"], h["psnr_median"], h["psnr_mean"],
                     h["psnr_of_mean_mse"], h["psnr_worst1pct"], c["entropy_bits"],
                     m["shuffled_tokens"]["psnr_median"], "/".join(str(x) for x in c["per_position_distinct"][:16])
                     + ("/..." if len(c["per_position_distinct"]) > 16 else ""), m["steps"], m["steps_per_s"]])
    cp = r["copy_prev"]
    rows.append(["copy x_{t-1}", 0, 0.0, cp["psnr_median"], cp["psnr_mean"], cp["psnr_of_mean_mse"],
                 cp["psnr_worst1pct"], None, None, None, None, None])
    cells = [head] + [[_f(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    def data(d: dict[str, Any] | None) -> str:
        return f"{d['transitions']} transitions, seeds {d['first_seed']}..{d['last_seed']}" if d else "unknown"

    return "\n".join([
        f"\nTokenizer experiment ({r['budget_minutes']} {r['clock']}-minutes or {r['max_steps'] or 'no'} step cap per "
        f"model, batch {r['train_batch']} pairs, {r['threads']} thread(s), {r['schedule']})",
        f"train: {data(r['data']['train'])}; held out: {data(r['data']['test'])}",
        "PSNR in dB on held-out x_t (per-frame median and mean; of the mean MSE; of the worst 1% frames' mean MSE);"
        " shuffled tokens: median PSNR when each frame is decoded with another frame's tokens (equal to the"
        " median: the tokens carry nothing); steps/s on each model's own clock",
        *("  " + s for s in lines)])


# ------------------------------------------------------------------------------------ run and measure

def new_arms(names: list[str], cfgs: dict[str, TokenizerConfig], seed: int, lr: float, weight_decay: float,
             device: torch.device | str = "cpu") -> list[Arm]:
    """Fresh tokenizers ``names`` with their optimisers; the i-th starts from torch seed ``seed + i``."""
    from model.data.envs import num_actions
    from model.nets.tokenizer import build_tokenizer
    from model.train.phases import make_optimizer

    arms = []
    for i, name in enumerate(names):
        torch.manual_seed(seed + i)
        tok = build_tokenizer(cfgs[name], num_actions(ENV)).to(device)
        arms.append(Arm(name, tok, make_optimizer(tok, lr, weight_decay)))
    return arms


def load_arms(names: list[str], out_dir: Path, cfgs: dict[str, TokenizerConfig],
              device: torch.device | str = "cpu") -> list[Arm]:
    """The tokenizers ``names`` saved in ``out_dir`` by :func:`save_arms`, with their steps and clocks;
    ``cfgs`` takes their stored configs."""
    from model.checkpoint import CheckpointError, load_checkpoint

    arms = []
    for name in names:
        try:
            ck = load_checkpoint(out_dir / name, device=device, names=("tokenizer",))
        except CheckpointError as e:
            raise UserError(f"--eval-only: {e}") from None
        st = ck.state
        arms.append(Arm(name, ck.models["tokenizer"], steps=int(st.get("steps", 0)),
                        cpu_s=float(st.get("cpu_s", 0.0)), wall_s=float(st.get("wall_s", 0.0)),
                        run=str(st.get("run", ""))))
        cfgs[name] = ck.cfg.tokenizer
    return arms


def save_arms(arms: list[Arm], out_dir: Path, cfgs: dict[str, TokenizerConfig], training: dict[str, Any]) -> None:
    """One checkpoint folder per model in ``out_dir``, with its steps, clocks and the run's settings."""
    from model.checkpoint import save_checkpoint

    for a in arms:
        state = {"steps": a.steps, "cpu_s": a.cpu_s, "wall_s": a.wall_s, "experiment": "tokenizers",
                 "model": a.name, "run": json.dumps(training)}
        save_checkpoint(out_dir / a.name, {"tokenizer": a.tok}, checkpoint_config(cfgs[a.name]), state)


def model_report(a: Arm, cfg: TokenizerConfig, test_data: Transitions, clock: str, checkpoint: Path,
                 batch: int = 64, device: torch.device | str = "cpu") -> tuple[dict[str, Any], np.ndarray]:
    """One model's row of the result (held-out errors, shuffled tokens, code use, speed, curve) and its
    per-frame held-out MSE."""
    t0 = time.perf_counter()
    mse, tokens = evaluate(a.tok, test_data, batch, device)
    k, v = int(a.tok.tokens_per_frame), int(a.tok.vocab_size)
    clk = a.clock(clock)
    return {
        "label": LABELS[a.name], "kind": a.tok.kind, "tokens_per_frame": k, "vocab_size": v,
        "bits_per_frame": k * math.log2(v), "params": sum(p.numel() for p in a.tok.parameters()),
        "config": dataclasses.asdict(cfg), "steps": a.steps, "cpu_s": round(a.cpu_s, 2),
        "wall_s": round(a.wall_s, 2), "steps_per_s": a.steps / clk if clk > 0 else None,
        "checkpoint": str(checkpoint), "heldout": error_summary(mse),
        "shuffled_tokens": error_summary(shuffled_token_mse(a.tok, test_data, tokens, batch, device)),
        "codes": {**code_stats(tokens, v), "usage_ema_entropy_bits": a.tok.quantizer.entropy_bits()},
        "curve": a.curve, "eval_s": round(time.perf_counter() - t0, 2)}, mse


def worst_frames(arms: list[Arm], errors: dict[str, np.ndarray], test_data: Transitions, count: int, png: Path,
                 device: torch.device | str = "cpu") -> dict[str, Any]:
    """Write the strip of the ``count`` held-out transitions the cpu Δ-tokenizer (else the first model) gets
    most wrong to ``png``: rows x_{t-1}, x_t, then each model's reconstruction. Returns what it shows."""
    from PIL import Image

    ref = "cpu" if "cpu" in errors else arms[0].name
    worst = np.argsort(-errors[ref], kind="stable")[:count]
    prev, _, nxt = test_data.pairs(worst)
    rows = [prev, nxt]
    for a in arms:
        recon, _ = a.tok.reconstruct(*test_data.tensors(worst, device))
        rows.append(to_uint8(recon))
    png.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(worst_strip(rows)).save(png)
    return {"path": str(png), "chosen_by": ref, "rows": ["x_{t-1}", "x_t"] + [LABELS[a.name] for a in arms],
            "scale": SCALE, "transitions": [int(i) for i in worst],
            "psnr": {a.name: [float(psnr_from_mse(errors[a.name][i])) for i in worst] for a in arms},
            "psnr_copy": [float(psnr_from_mse(m)) for m in copy_mse(prev, nxt)]}
