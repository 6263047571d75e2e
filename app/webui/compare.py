"""Side-by-side comparisons for the web UI, as plain functions (no gradio here, so they are testable).

* Tokenizers: one (x_{t-1}, a_{t-1}, x_t) transition through the Δ-tokenizer and the IRIS-style
  baseline: reconstructions, error maps, token-id grids, bits per frame (tokens x log2(vocab)),
  MSE/PSNR, and the worst 1% of a batch. "Copy x_{t-1}" is reported too: a tokenizer that cannot
  beat copying the previous frame has not learned to use it.
* I-tokens: one action sequence through the world models with and without I-tokens next to the real
  env, with the per-step pixel error of each against the real frames.

Frames come from a fresh real rollout, a stored episode, or an uploaded pair of frames.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from model.data.frames import to_tensor, to_uint8


# ----------------------------------------------------------------------------------- transitions

@dataclass
class Transition:
    """x_{t-1} --a--> x_t, uint8 (H, W, 3) frames."""

    prev: np.ndarray
    action: int
    frame: np.ndarray


def transitions_from_episode(frames: np.ndarray, actions: np.ndarray) -> list[Transition]:
    return [Transition(frames[t], int(actions[t]), frames[t + 1]) for t in range(len(actions))]


def rollout_transitions(env_name: str, steps: int, seed: int | None = 0,
                        policy: str = "random") -> list[Transition]:
    """A fresh real-env rollout under a uniform random policy (held-out data for the tokenizers)."""
    from model.data.envs import make_env

    env = make_env(env_name, seed=seed)
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    out: list[Transition] = []
    try:
        while len(out) < steps:
            a = int(rng.integers(env.action_space.n))
            nxt, _, term, trunc, _ = env.step(a)
            out.append(Transition(np.asarray(obs).copy(), a, np.asarray(nxt).copy()))
            obs = nxt
            if term or trunc:
                obs, _ = env.reset()
    finally:
        env.close()
    return out


def stored_transitions(store_dir: str | Path, episode: int = -1, limit: int = 256) -> list[Transition]:
    """Transitions of one stored episode (index into the store's order; -1 = newest)."""
    from model.data.store import EpisodeStore

    store_dir = Path(store_dir)
    if not store_dir.exists():
        raise ValueError(f"no experience store at {store_dir}")
    store = EpisodeStore(store_dir)
    ids = store.ids()
    if not ids:
        raise ValueError(f"the store at {store_dir} holds no episodes yet")
    if not -len(ids) <= episode < len(ids):
        raise ValueError(f"episode {episode} out of range: the store holds {len(ids)} episodes")
    ep = store.get(ids[episode])
    return transitions_from_episode(np.asarray(ep.frames), np.asarray(ep.actions))[:limit]


def load_image(data: Any, size: int, what: str = "image") -> tuple[np.ndarray, str | None]:
    """Anything an upload widget hands over (path, bytes, PIL image, array) -> uint8 (size, size, 3).

    A wrong size is resized (nearest, so pixel art stays pixel art) and reported in the notice;
    a file that is not an image raises ValueError with a message for the user.
    """
    if data is None:
        raise ValueError(f"no {what} given: upload two consecutive frames")
    try:
        if isinstance(data, np.ndarray):
            arr = data
            if arr.dtype != np.uint8:
                arr = np.clip(arr * (255 if arr.max() <= 1.0 else 1), 0, 255).astype(np.uint8)
            img = Image.fromarray(arr)
        elif isinstance(data, Image.Image):
            img = data
        elif isinstance(data, (bytes, bytearray)):
            img = Image.open(io.BytesIO(data))
        else:
            img = Image.open(Path(str(data)))
        img.load()
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, TypeError) as e:
        raise ValueError(f"the {what} is not a readable image ({type(e).__name__}); upload a PNG, JPEG or GIF") from None
    img = img.convert("RGB")
    notice = None
    if img.size != (size, size):
        notice = f"{what} was {img.size[0]}x{img.size[1]}; resized to {size}x{size}"
        img = img.resize((size, size), Image.NEAREST)
    return np.asarray(img, dtype=np.uint8).copy(), notice


def uploaded_transition(prev: Any, frame: Any, size: int, action: int = 0) -> tuple[Transition, list[str]]:
    p, n1 = load_image(prev, size, "first frame")
    f, n2 = load_image(frame, size, "second frame")
    return Transition(p, int(action), f), [n for n in (n1, n2) if n]


# ------------------------------------------------------------------------------------ metrics

def mse_psnr(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """MSE on [0, 1] pixels and PSNR in dB (capped at 99 dB for identical frames)."""
    d = a.astype(np.float64) / 255.0 - b.astype(np.float64) / 255.0
    mse = float(np.mean(d * d))
    return mse, (99.0 if mse <= 1e-10 else min(99.0, 10.0 * math.log10(1.0 / mse)))


def error_map(a: np.ndarray, b: np.ndarray, gain: float = 4.0) -> np.ndarray:
    """Per-pixel absolute error as a black-to-yellow heat map (x``gain`` so small errors show)."""
    err = np.abs(a.astype(np.float32) - b.astype(np.float32)).mean(-1) / 255.0
    v = np.clip(err * gain, 0.0, 1.0)
    rgb = np.stack([np.clip(v * 2, 0, 1), np.clip(v * 2 - 0.5, 0, 1) * 0.9 + v * 0.1, v * 0.15], -1)
    return (rgb * 255).round().astype(np.uint8)


def token_grid(tokens: Sequence[int]) -> list[list[int]]:
    """Token ids laid out as their spatial grid (a square grid: 2x2 for 4 tokens, 4x4 for 16, 8x8 for 64)."""
    k = len(tokens)
    side = int(round(math.sqrt(k)))
    if side * side != k:
        return [list(map(int, tokens))]
    return [list(map(int, tokens[r * side:(r + 1) * side])) for r in range(side)]


def upscale(frame: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour: the browser gets crisp pixels whatever its own image smoothing does."""
    return frame if scale == 1 else frame.repeat(scale, 0).repeat(scale, 1)


# ---------------------------------------------------------------------------------- tokenizers

@dataclass
class TokenizerView:
    label: str
    recon: np.ndarray  # uint8 (H, W, 3)
    error: np.ndarray  # uint8 heat map
    tokens: list[int]
    tokens_per_frame: int
    vocab_size: int
    bits: float
    mse: float
    psnr: float


@dataclass
class PairComparison:
    original: np.ndarray
    prev: np.ndarray
    views: list[TokenizerView]
    copy_prev_mse: float
    copy_prev_psnr: float
    notices: list[str] = field(default_factory=list)

    def table(self) -> list[list[Any]]:
        """Rows for a metrics table: model, tokens/frame, vocab, bits/frame, MSE, PSNR."""
        rows = [[v.label, v.tokens_per_frame, v.vocab_size, round(v.bits, 1), round(v.mse, 6), round(v.psnr, 2)]
                for v in self.views]
        rows.append(["copy x_{t-1} (no model)", 0, "-", 0.0, round(self.copy_prev_mse, 6), round(self.copy_prev_psnr, 2)])
        return rows


TABLE_HEADERS = ["model", "tokens/frame", "vocab", "bits/frame", "MSE", "PSNR (dB)"]


def _device_of(module: torch.nn.Module) -> torch.device:
    try:
        return next(module.parameters()).device
    except StopIteration:
        return torch.device("cpu")


@torch.no_grad()
def reconstruct(tok: Any, transitions: Sequence[Transition], batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(recons uint8 (N, H, W, 3), tokens (N, K)) for a list of transitions, in batches."""
    dev = _device_of(tok)
    recons, toks = [], []
    for i in range(0, len(transitions), batch):
        chunk = transitions[i:i + batch]
        prev = to_tensor(np.stack([t.prev for t in chunk]), dev)
        frames = to_tensor(np.stack([t.frame for t in chunk]), dev)
        actions = torch.tensor([t.action for t in chunk], dtype=torch.long, device=dev)
        recon, tokens = tok.reconstruct(prev, actions, frames)
        recons.append(to_uint8(recon))
        toks.append(tokens.detach().cpu().numpy())
    return np.concatenate(recons), np.concatenate(toks)


def compare_transition(tokenizers: Iterable[tuple[str, Any]], tr: Transition,
                       notices: list[str] | None = None) -> PairComparison:
    views = []
    for label, tok in tokenizers:
        recon, tokens = reconstruct(tok, [tr])
        mse, psnr = mse_psnr(recon[0], tr.frame)
        views.append(TokenizerView(label, recon[0], error_map(recon[0], tr.frame), tokens[0].tolist(),
                                   int(tok.tokens_per_frame), int(tok.vocab_size),
                                   tok.bits_per_frame, mse, psnr))
    cm, cp = mse_psnr(tr.prev, tr.frame)
    return PairComparison(tr.frame, tr.prev, views, cm, cp, list(notices or []))


@dataclass
class BatchStats:
    label: str
    mse: np.ndarray  # (N,) per transition
    recons: np.ndarray

    @property
    def psnr_of_mean(self) -> float:
        m = float(self.mse.mean())
        return 99.0 if m <= 1e-10 else 10 * math.log10(1 / m)

    @property
    def median_psnr(self) -> float:
        return float(np.median(10 * np.log10(1 / np.maximum(self.mse, 1e-10))))


def batch_stats(tok: Any, label: str, transitions: Sequence[Transition]) -> BatchStats:
    recons, _ = reconstruct(tok, transitions)
    target = np.stack([t.frame for t in transitions]).astype(np.float64) / 255.0
    mse = ((recons.astype(np.float64) / 255.0 - target) ** 2).mean(axis=(1, 2, 3))
    return BatchStats(label, mse, recons)


def worst_gallery(stats: BatchStats, transitions: Sequence[Transition], fraction: float = 0.01,
                  scale: int = 3) -> list[tuple[np.ndarray, str]]:
    """The worst ``fraction`` of the batch (at least one): [original | recon | error] strips + captions."""
    n = max(1, int(math.ceil(len(transitions) * fraction)))
    order = np.argsort(-stats.mse)[:n]
    out = []
    for i in order:
        t = transitions[int(i)]
        strip = np.concatenate([t.frame, stats.recons[i], error_map(stats.recons[i], t.frame)], axis=1)
        psnr = 99.0 if stats.mse[i] <= 1e-10 else 10 * math.log10(1 / stats.mse[i])
        out.append((upscale(strip, scale), f"{stats.label} #{int(i)}: MSE {stats.mse[i]:.5f}, {psnr:.1f} dB"))
    return out


def batch_table(all_stats: Sequence[BatchStats], transitions: Sequence[Transition]) -> list[list[Any]]:
    """Rows: model, N, PSNR of mean MSE, median PSNR, worst-1% PSNR (copy x_{t-1} included)."""
    rows = []
    prev = np.stack([t.prev for t in transitions]).astype(np.float64) / 255.0
    target = np.stack([t.frame for t in transitions]).astype(np.float64) / 255.0
    copy = BatchStats("copy x_{t-1} (no model)", ((prev - target) ** 2).mean(axis=(1, 2, 3)), np.empty(0))
    for s in [*all_stats, copy]:
        k = max(1, int(math.ceil(len(s.mse) * 0.01)))
        worst = float(np.sort(s.mse)[-k:].mean())
        worst_psnr = 99.0 if worst <= 1e-10 else 10 * math.log10(1 / worst)
        rows.append([s.label, len(s.mse), round(s.psnr_of_mean, 2), round(s.median_psnr, 2), round(worst_psnr, 2)])
    return rows


BATCH_HEADERS = ["model", "transitions", "PSNR of mean MSE (dB)", "median PSNR (dB)", "worst 1% PSNR (dB)"]


def tokenizers_of(bundle: Any) -> list[tuple[str, Any]]:
    """(label, tokenizer): the IRIS-style baseline (when trained) first, then the bundle's own."""
    out = []
    iris = bundle.iris_tokenizer
    if iris is not None:
        out.append((f"IRIS-style ({iris.tokens_per_frame} tokens)", iris))
    tok = bundle.tokenizer
    name = "Δ-tokenizer" if getattr(tok, "kind", "delta") == "delta" else "IRIS-style (main)"
    out.append((f"{name} ({tok.tokens_per_frame} tokens)", tok))
    return out


# ------------------------------------------------------------------------------------ I-tokens

@dataclass
class ITokenRollout:
    """One action sequence played in the real env and in the dreams with and without I-tokens."""

    actions: list[str]
    real: list[np.ndarray]
    with_i: list[np.ndarray]
    without_i: list[np.ndarray]
    err_with: list[float]  # mean |dream - real| per step, 0..255
    err_without: list[float]

    def rows(self) -> list[dict[str, Any]]:
        """Long-format rows for a line plot: step, error, variant."""
        out = [{"step": t, "error": e, "variant": "with I-tokens"} for t, e in enumerate(self.err_with)]
        out += [{"step": t, "error": e, "variant": "without I-tokens"} for t, e in enumerate(self.err_without)]
        return out


def itoken_rollout(bundle: Any, steps: int = 30, seed: int = 0, temperature: float = 1.0,
                   policy: str = "random") -> ITokenRollout:
    """Two play sessions on the same seeded real episode, one per world-model variant, fed the same
    actions (uniform random, or the agent acting on the real frames of the first session).

    Raises the engine's VariantUnavailable when the checkpoint lacks one of the two world models."""
    from app.engine import PlaySession, VariantUnavailable

    if steps < 1:
        raise ValueError("steps must be at least 1")
    missing = [v for v in (True, False) if v not in bundle.world_models]
    if missing:
        raise VariantUnavailable(
            "this checkpoint has no world model " + ("with" if missing[0] else "without")
            + " I-tokens; train with --baselines to compare both")
    a = PlaySession(bundle, shadow=True, seed=seed, temperature=temperature, i_tokens=True)
    b = PlaySession(bundle, shadow=True, seed=seed, temperature=temperature, i_tokens=False)
    try:
        ia, ib = a.reset(seed=seed), b.reset(seed=seed)
        if policy == "agent":
            a.set_controller("agent")
            a.set_agent_view("real")
        elif policy != "random":
            raise ValueError(f"policy must be 'random' or 'agent', got {policy!r}")
        rng = np.random.default_rng(seed)
        out = ITokenRollout([], [ia.real_frame], [ia.dream_frame], [ib.dream_frame],
                            [ia.pixel_error or 0.0], [ib.pixel_error or 0.0])
        for _ in range(steps):
            if ia.real_done:
                break
            act = int(rng.integers(len(a.action_names))) if policy == "random" else None
            ia = a.step(act)
            ib = b.step(a.action_names.index(ia.action_name))
            out.actions.append(ia.action_name)
            out.real.append(ia.real_frame)
            out.with_i.append(ia.dream_frame)
            out.without_i.append(ib.dream_frame)
            out.err_with.append(float(ia.pixel_error or 0.0))
            out.err_without.append(float(ib.pixel_error or 0.0))
        return out
    finally:
        a.close()
        b.close()


def itoken_gif(rollout: ITokenRollout, path: str | Path, fps: float = 8, scale: int = 3) -> Path:
    """real | with I-tokens | without I-tokens, one GIF frame per step (app/recorder.py's footer)."""
    from app.recorder import FrameRecorder

    rec = FrameRecorder()
    rec.start()
    for t, (r, w, wo) in enumerate(zip(rollout.real, rollout.with_i, rollout.without_i)):
        rec.add(t, real=r, with_i=w, without_i=wo)
    rec.stop()
    return rec.write_gif(path, names=["real", "with_i", "without_i"], fps=fps, scale=scale)
