"""Measurements of a trained checkpoint on held-out data (what `deltaplay eval checkpoint` reports).

Held-out means fresh env seeds: the trainer's collectors seed each episode with a 31-bit hash
(``SeedSequence([seed, k])``), while evaluation uses small consecutive seeds (``10_000 + i`` by
default), skipping any seed found in the run's store (:func:`used_seeds`). A random hash lands in a
range of a few thousand small integers with probability ~1e-6 per training episode.

Four measurements, each a plain function over models and episodes (no UI here):

* :func:`reconstruction_errors` - per-frame MSE of a tokenizer's reconstruction of x_t (the Δ
  tokenizer also sees x_{t-1} and a_{t-1}); :func:`copy_errors` is the "nothing changed" baseline
  x̂_t = x_{t-1}; :func:`error_summary` turns MSEs into mean/median/worst-1% MSE and PSNR.
* :func:`token_accuracy` - teacher-forced next-token accuracy of a world model on held-out
  segments (exactly the training objective's targets), plus a majority-token baseline.
* :func:`rollout_errors` - imagined rollouts from real context, driven by the recorded actions of a
  real episode, compared frame by frame with what the real env produced for those same actions.
* :func:`run_episodes` + :func:`episode_stats` - returns and Crafter scores of policies in the real
  env on a fixed list of seeds (the same seeds for every policy, so differences are not luck of the map).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.data.crafter_score import crafter_score, success_rates
from model.data.envs import achievement_names, canonical_name, make_env
from model.data.frames import to_tensor
from model.data.policies import Policy
from model.data.store import Episode
from model.nets.imagination import DreamEnv

Progress = Callable[[str, int, int], None]  # (what, done, total)

# PSNR of a frame reproduced exactly is infinite; per-frame PSNRs are capped here (MSE floor 1e-10),
# far above anything a lossy tokenizer reaches (one uint8 step in one channel of one pixel: ~89 dB).
MSE_FLOOR = 1e-10


def _tick(progress: Progress | None, what: str, done: int, total: int) -> None:
    if progress is not None:
        progress(what, done, total)


# ----------------------------------------------------------------------------------- held-out seeds

def used_seeds(store_dir: str | Path | None) -> set[int]:
    """Env seeds of every stored episode under ``store_dir`` (all splits, all DDP ranks), read from the
    episode files' ``meta`` member only (npz members load lazily)."""
    import json

    seeds: set[int] = set()
    if store_dir is None or not Path(store_dir).is_dir():
        return seeds
    for f in Path(store_dir).rglob("episodes/*/*.npz"):
        try:
            with np.load(f, allow_pickle=False) as d:
                seed = json.loads(str(d["meta"][()])).get("seed")
        except Exception:  # noqa: BLE001 - a damaged file is the store's problem, not evaluation's
            continue
        if seed is not None:
            seeds.add(int(seed))
    return seeds


def heldout_seeds(start: int, n: int, exclude: Iterable[int] = ()) -> list[int]:
    """``n`` consecutive seeds from ``start``, skipping any in ``exclude``."""
    exclude = set(exclude)
    out, s = [], int(start)
    while len(out) < n:
        if s not in exclude:
            out.append(s)
        s += 1
    return out


# ------------------------------------------------------------------------------------- real episodes

def run_episodes(env_name: str, policy: Policy, seeds: Sequence[int], max_steps: int | None = None,
                 env_kwargs: dict[str, Any] | None = None, progress: Progress | None = None,
                 label: str = "episodes") -> list[Episode]:
    """One episode per seed, all envs in lockstep in this process so the policy runs batched.

    ``max_steps`` cuts episodes (marked truncated, ``meta["cut"] = True``) to bound the time.
    The policy sees every env every round, finished ones included (their last frame), so a recurrent
    policy keeps one state row per env; only the actions of running envs are used. No worker
    processes: a batched policy call costs more than the env steps at this size, and the seeds must
    map to episodes exactly (the Collector hands seeds out in its own order)."""
    names = achievement_names(env_name)
    envs = [make_env(env_name, **(env_kwargs or {})) for _ in seeds]
    frames, actions, rewards, terms, truncs, achs = ([] for _ in range(6))
    try:
        for i, (env, s) in enumerate(zip(envs, seeds)):
            obs, _ = env.reset(seed=int(s))
            frames.append([obs]), actions.append([]), rewards.append([])
            terms.append([]), truncs.append([]), achs.append([])
            _tick(progress, f"{label}: reset", i + 1, len(seeds))
        if hasattr(policy, "reset"):
            policy.reset(list(range(len(envs))))
        running = [True] * len(envs)
        cut = [False] * len(envs)
        steps = 0
        while any(running):
            acts = np.asarray(policy(np.stack([f[-1] for f in frames]))).reshape(-1)
            for i, env in enumerate(envs):
                if not running[i]:
                    continue
                o, r, term, trunc, info = env.step(int(acts[i]))
                frames[i].append(o), actions[i].append(int(acts[i])), rewards[i].append(float(r))
                if max_steps is not None and len(actions[i]) >= max_steps and not (term or trunc):
                    trunc, cut[i] = True, True
                terms[i].append(bool(term)), truncs[i].append(bool(trunc))
                if names:
                    counts = info.get("achievements", {})
                    achs[i].append([min(int(counts.get(n, 0)), 255) for n in names])
                if term or trunc:
                    running[i] = False
            steps += 1
            if steps % 25 == 0 or not any(running):
                _tick(progress, f"{label}: done", len(envs) - sum(running), len(envs))
    finally:
        for env in envs:
            env.close()
    eps = []
    for i, s in enumerate(seeds):
        ach = np.array(achs[i], np.uint8).reshape(len(actions[i]), len(names))
        eps.append(Episode(np.stack(frames[i]), actions[i], rewards[i], terms[i], truncs[i], achievements=ach,
                           achievement_names=names, seed=int(s), env=canonical_name(env_name),
                           meta={"cut": cut[i]}))
    return eps


@dataclass(frozen=True)
class EpisodeFacts:
    """What :func:`episode_stats` needs of one episode: small, so DDP ranks can exchange them."""

    return_: float
    length: int
    unlocked: dict[str, bool]  # achievement -> unlocked at least once (empty without achievements)
    cut: bool  # cut short by ``max_steps``
    terminated: bool  # ended by the env (death), not by a time limit

    @classmethod
    def of(cls, ep: Episode) -> EpisodeFacts:
        return cls(ep.return_, ep.length, ep.unlocked(), bool(ep.meta.get("cut")),
                   bool(ep.length and ep.terminated[-1]))


def episode_stats(episodes: Sequence[Episode | EpisodeFacts]) -> dict[str, Any]:
    """The one summary of real episodes (`deltaplay eval checkpoint` and the trainer's metrics): their
    number, mean and spread of the return, mean length, for Crafter the success rates (%) and the score,
    every return, and how many episodes ``max_steps`` cut and how many the env terminated."""
    facts = [e if isinstance(e, EpisodeFacts) else EpisodeFacts.of(e) for e in episodes]
    if not facts:
        raise ValueError("episode_stats needs at least one episode")
    returns = np.array([f.return_ for f in facts])
    out: dict[str, Any] = {"episodes": len(facts), "return_mean": float(returns.mean()),
                           "return_std": float(returns.std()),
                           "length_mean": float(np.mean([f.length for f in facts]))}
    names = list(facts[0].unlocked)
    if names:
        rates = success_rates(np.array([[f.unlocked[n] for n in names] for f in facts]))
        out["success_rates"] = {n: float(r) for n, r in zip(names, rates)}
        out["crafter_score"] = crafter_score(out["success_rates"])
    out["returns"] = [float(f.return_) for f in facts]
    out["cut_by_max_steps"] = sum(f.cut for f in facts)
    out["terminated"] = sum(f.terminated for f in facts)
    return out


# ----------------------------------------------------------------------------------- reconstruction

def psnr_from_mse(mse: np.ndarray | float) -> np.ndarray | float:
    """PSNR in dB for frames in [0, 1], capped at 100 dB (see MSE_FLOOR)."""
    return 10.0 * np.log10(1.0 / np.maximum(mse, MSE_FLOOR))


def error_summary(mse: np.ndarray) -> dict[str, float]:
    """Per-frame MSEs -> mean and median MSE and PSNR, and the worst 1% of frames (by MSE): their
    mean MSE and the PSNR of that mean. ``psnr_of_mean_mse`` is the dataset-level PSNR; ``psnr_mean``
    averages per-frame PSNRs (each capped at 100 dB), which exact frames would otherwise make infinite."""
    mse = np.asarray(mse, np.float64).reshape(-1)
    if mse.size == 0:
        raise ValueError("error_summary needs at least one frame")
    psnr = psnr_from_mse(mse)
    worst = np.sort(mse)[-max(1, math.ceil(0.01 * mse.size)):]
    return {"frames": int(mse.size), "mse_mean": float(mse.mean()), "mse_median": float(np.median(mse)),
            "mse_worst1pct": float(worst.mean()), "psnr_mean": float(psnr.mean()),
            "psnr_median": float(np.median(psnr)), "psnr_worst1pct": float(psnr_from_mse(worst.mean())),
            "psnr_of_mean_mse": float(psnr_from_mse(mse.mean())), "exact_frac": float((mse == 0).mean())}


def frame_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) x2 -> (N,) mean squared error per frame, in float32."""
    return (pred.float() - target.float()).pow(2).flatten(1).mean(1)


def transitions(episodes: Sequence[Episode], max_count: int | None = None) -> Iterable[tuple[np.ndarray, ...]]:
    """(x_{t-1}, a_{t-1}, x_t) uint8/int64 arrays, episode by episode, at most ``max_count`` in all."""
    left = math.inf if max_count is None else max_count
    for ep in episodes:
        n = int(min(ep.length, left))
        if n <= 0:
            break
        yield ep.frames[:n], ep.actions[:n], ep.frames[1:n + 1]
        left -= n


def _batches(episodes: Sequence[Episode], batch: int, max_count: int | None):
    """Transitions regrouped into chunks of ``batch``."""
    for prev, act, nxt in transitions(episodes, max_count):
        for i in range(0, len(act), batch):
            yield prev[i:i + batch], act[i:i + batch], nxt[i:i + batch]


@torch.inference_mode()
def reconstruction_errors(tokenizer, episodes: Sequence[Episode], batch: int = 64,
                          max_count: int | None = None, device: torch.device | str = "cpu",
                          progress: Progress | None = None, label: str = "recon") -> np.ndarray:
    """Per-frame MSE of ``tokenizer.reconstruct(x_{t-1}, a_{t-1}, x_t)`` against x_t (an IRIS-style
    tokenizer ignores x_{t-1} and the action). Measured on the float reconstruction, as in training."""
    total = sum(len(a) for _, a, _ in transitions(episodes, max_count))
    out, done = [], 0
    for prev, act, nxt in _batches(episodes, batch, max_count):
        p, x = to_tensor(prev, device), to_tensor(nxt, device)
        a = torch.as_tensor(act, device=device).long()
        recon, _ = tokenizer.reconstruct(p, a, x)
        out.append(frame_mse(recon, x).cpu().numpy())
        done += len(act)
        _tick(progress, label, done, total)
    return np.concatenate(out) if out else np.zeros(0)


def copy_errors(episodes: Sequence[Episode], max_count: int | None = None) -> np.ndarray:
    """The copy baseline x̂_t = x_{t-1}: per-frame MSE between consecutive real frames, in [0, 1] units."""
    out = []
    for prev, _, nxt in transitions(episodes, max_count):
        d = (nxt.astype(np.float32) - prev.astype(np.float32)) / 255.0
        out.append((d ** 2).reshape(len(d), -1).mean(1))
    return np.concatenate(out) if out else np.zeros(0)


def tokenizer_facts(tokenizer) -> dict[str, Any]:
    k, v = int(tokenizer.tokens_per_frame), int(tokenizer.vocab_size)
    return {"kind": tokenizer.kind, "tokens_per_frame": k, "vocab_size": v, "bits_per_frame": tokenizer.bits_per_frame}


# ------------------------------------------------------------------------------------------ dynamics

def segments(episodes: Sequence[Episode], steps: int, max_count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Non-overlapping windows of ``steps`` transitions ((steps+1) frames, steps actions), taken in
    turn from each episode so that many episodes are represented."""
    per_ep = [[(s, s + steps) for s in range(0, ep.length - steps + 1, steps)] for ep in episodes]
    out: list[tuple[np.ndarray, np.ndarray]] = []
    round_ = 0
    while len(out) < max_count and any(round_ < len(w) for w in per_ep):
        for ep, wins in zip(episodes, per_ep):
            if round_ < len(wins) and len(out) < max_count:
                a, b = wins[round_]
                out.append((ep.frames[a:b + 1], ep.actions[a:b]))
        round_ += 1
    return out


def teacher_forced(tokenizer, world_model, frames: torch.Tensor, actions: torch.Tensor):
    """frames (B, T+1, 3, H, W), actions (B, T) -> (the world model's output on the real tokens, those tokens
    (B, T, K)): Δ tokens of each transition, IRIS tokens of x_0..x_{T-1}, as in training."""
    wm = world_model
    b, t = actions.shape
    if wm.layout == "delta":
        tokens = tokenizer.encode(frames[:, :-1].flatten(0, 1), actions.flatten(),
                                  frames[:, 1:].flatten(0, 1)).view(b, t, -1)
        return wm(frames[:, :-1] if wm.i_tokens else None, actions, tokens), tokens
    tokens = tokenizer.encode(None, None, frames[:, :-1].flatten(0, 1)).view(b, t, -1)
    return wm(None, actions, tokens), tokens


@torch.inference_mode()
def token_accuracy(tokenizer, world_model, episodes: Sequence[Episode], steps: int | None = None,
                   max_segments: int = 64, batch: int = 16, device: torch.device | str = "cpu",
                   progress: Progress | None = None, label: str = "tokens") -> dict[str, Any]:
    """Teacher-forced next-token accuracy and cross-entropy on held-out segments of ``steps``
    transitions (default: the world model's window, shortened if episodes are shorter). Targets
    are the tokenizer's tokens, as in training. ``majority_accuracy`` predicts, for each token
    position, the most frequent token of these same targets: the bar a model must clear."""
    wm = world_model
    longest = max((e.length for e in episodes), default=0)
    steps = min(steps or wm.cfg.max_steps, wm.cfg.max_steps, longest)
    if steps < (2 if wm.layout == "iris" else 1):
        raise ValueError("no held-out episode is long enough for a world-model segment")
    segs = segments(episodes, steps, max_segments)
    correct, ce, count = None, 0.0, 0
    targets_all = []
    for i in range(0, len(segs), batch):
        chunk = segs[i:i + batch]
        frames = to_tensor(np.stack([f for f, _ in chunk]), device)  # (B, T+1, 3, H, W)
        actions = torch.as_tensor(np.stack([a for _, a in chunk]), device=device).long()  # (B, T)
        out, tokens = teacher_forced(tokenizer, wm, frames, actions)
        if wm.layout == "delta":
            logits, targets = out.token_logits, tokens
        else:  # IRIS: token_logits[:, t] predicts the tokens of frame t+1
            logits, targets = out.token_logits[:, :-1], tokens[:, 1:]
        logits = logits.float().flatten(0, 1)  # (N, K, V)
        targets = targets.flatten(0, 1)  # (N, K)
        hit = (logits.argmax(-1) == targets).sum(0).double()
        correct = hit if correct is None else correct + hit
        ce += torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="sum").item()
        count += targets.size(0)
        targets_all.append(targets.cpu())
        _tick(progress, label, min(i + batch, len(segs)), len(segs))
    targets = torch.cat(targets_all)  # (N, K)
    majority = [float((targets[:, k] == torch.mode(targets[:, k]).values).float().mean())
                for k in range(targets.size(1))]
    per_pos = (correct / count).tolist()
    k = targets.size(1)
    return {"accuracy": float(np.mean(per_pos)), "per_position": per_pos,
            "cross_entropy": ce / (count * k), "majority_accuracy": float(np.mean(majority)),
            "segments": len(segs), "steps": int(steps), "predictions": int(count * k)}


@torch.inference_mode()
def reward_predictions(tokenizer, world_model, episodes: Sequence[Episode], batch: int = 16,
                       device: torch.device | str = "cpu", progress: Progress | None = None,
                       label: str = "rewards") -> dict[str, Any]:
    """Teacher-forced reward and end predictions on every held-out step, grouped by what the real env
    gave. Why: the agent learns from these predictions alone, so a world model that pays for the wrong
    event (GridWorld: a step onto an enemy) teaches the wrong behaviour, and only held-out frames show
    it (on its training frames such a model can look right by memorising them). Each episode is cut
    into consecutive windows of the world model's context, so every step is predicted once."""
    wm = world_model
    windows: dict[int, list[tuple[Episode, int, int]]] = {}
    for ep in episodes:
        for a in range(0, ep.length, wm.cfg.max_steps):
            b = min(a + wm.cfg.max_steps, ep.length)
            windows.setdefault(b - a, []).append((ep, a, b))
    chunks = [(n, group[i:i + batch]) for n, group in sorted(windows.items()) for i in range(0, len(group), batch)]
    if not chunks:
        raise ValueError("no held-out steps to predict rewards on")
    pred_r, pred_end, real_r, real_end = [], [], [], []
    for j, (n, chunk) in enumerate(chunks):
        frames = to_tensor(np.stack([ep.frames[a:b + 1] for ep, a, b in chunk]), device)  # (B, n+1, 3, H, W)
        actions = torch.as_tensor(np.stack([ep.actions[a:b] for ep, a, b in chunk]), device=device).long()
        out, _ = teacher_forced(tokenizer, wm, frames, actions)
        pred_r.append(wm.reward_codec.decode(out.reward_logits.float()).flatten().cpu())
        pred_end.append(torch.softmax(out.end_logits.float(), -1)[..., 1].flatten().cpu())
        real_r.append(torch.as_tensor(np.concatenate([ep.rewards[a:b] for ep, a, b in chunk])))
        real_end.append(torch.as_tensor(np.concatenate([ep.terminated[a:b] for ep, a, b in chunk])))
        _tick(progress, label, j + 1, len(chunks))
    r, e, rr, re = (torch.cat(x) for x in (pred_r, pred_end, real_r, real_end))

    def group(mask: torch.Tensor) -> dict[str, Any]:
        n = int(mask.sum())
        return {"steps": n, "predicted_reward": float(r[mask].mean()) if n else None,
                "end_probability": float(e[mask].mean()) if n else None}

    return {"positive": group(rr > 0), "negative": group(rr < 0), "zero": group(rr == 0),
            "terminal": group(re), "reward_mae": float((r - rr).abs().mean()), "steps": int(rr.numel())}


def rollout_windows(episodes: Sequence[Episode], context: int, horizon: int, count: int,
                    seed: int = 0) -> list[tuple[Episode, int]]:
    """Up to ``count`` (episode, t0) pairs with ``context`` real frames ending at x_{t0} and ``horizon``
    recorded steps after it; one random start per episode per round, so many episodes are used."""
    rng = np.random.default_rng(seed)
    pools = [(ep, list(rng.permutation(np.arange(context - 1, ep.length - horizon + 1))))
             for ep in episodes if ep.length - horizon + 1 > context - 1]
    out: list[tuple[Episode, int]] = []
    while len(out) < count and any(p for _, p in pools):
        for ep, pool in pools:
            if pool and len(out) < count:
                out.append((ep, int(pool.pop())))
    return out


@torch.inference_mode()
def rollout_errors(tokenizer, world_model, windows: Sequence[tuple[Episode, int]], context: int, horizon: int,
                   temperature: float = 1.0, seed: int = 0, batch: int = 16, device: torch.device | str = "cpu",
                   progress: Progress | None = None, label: str = "rollouts") -> np.ndarray:
    """MSE (starts, horizon) between imagined frames and the real ones: the dream is primed on the
    real x_{t0-context+1..t0} and their actions, then driven by the recorded a_{t0..t0+horizon-1};
    the real frames x_{t0+1..t0+horizon} are what the env produced for exactly those actions.
    Sampling is seeded, but the noise of a row depends on the batch it runs in: compare models
    with the same ``batch``."""
    out = []
    torch.manual_seed(seed)  # the same sampling noise for every world model compared
    for i in range(0, len(windows), batch):
        chunk = windows[i:i + batch]
        ctx = to_tensor(np.stack([ep.frames[t0 - context + 1:t0 + 1] for ep, t0 in chunk]), device)
        ctx_actions = torch.as_tensor(np.stack([ep.actions[t0 - context + 1:t0] for ep, t0 in chunk]),
                                      device=device).long().view(len(chunk), context - 1)
        acts = torch.as_tensor(np.stack([ep.actions[t0:t0 + horizon] for ep, t0 in chunk]), device=device).long()
        real = to_tensor(np.stack([ep.frames[t0 + 1:t0 + horizon + 1] for ep, t0 in chunk]), device)
        dream = DreamEnv(tokenizer, world_model, temperature=temperature)
        dream.reset(ctx, ctx_actions)
        errs = []
        for h in range(horizon):
            frame, _, _ = dream.step(acts[:, h])
            errs.append(frame_mse(frame, real[:, h]))
        out.append(torch.stack(errs, 1).cpu().numpy())
        _tick(progress, label, min(i + batch, len(windows)), len(windows))
    return np.concatenate(out) if out else np.zeros((0, horizon))


def copy_rollout_errors(windows: Sequence[tuple[Episode, int]], horizon: int) -> np.ndarray:
    """Baseline for rollouts: the start frame x_{t0} held still, against x_{t0+h}."""
    out = []
    for ep, t0 in windows:
        start = ep.frames[t0].astype(np.float32) / 255.0
        real = ep.frames[t0 + 1:t0 + horizon + 1].astype(np.float32) / 255.0
        out.append(((real - start) ** 2).reshape(horizon, -1).mean(1))
    return np.stack(out) if out else np.zeros((0, horizon))


def rollout_summary(mse: np.ndarray) -> dict[str, Any]:
    """(starts, horizon) MSEs -> per-step mean MSE and the PSNR of that mean, plus overall means."""
    mse = np.asarray(mse, np.float64)
    per_step = mse.mean(0)
    return {"starts": int(mse.shape[0]), "mse_per_step": per_step.tolist(),
            "psnr_per_step": [float(psnr_from_mse(m)) for m in per_step],
            "mse_mean": float(mse.mean()), "psnr_of_mean_mse": float(psnr_from_mse(mse.mean())),
            "psnr_last_step": float(psnr_from_mse(per_step[-1]))}
