"""Does the world model's I-token tell whether a move will scroll the view? A linear probe per move key.

    python -m experiments.motion_probe.cli checkpoints/crafter runs/other/checkpoints/last --json out.json

On straight walks of move keys from held-out seeds (the keys part's walks), each unambiguous move step is labelled
"scrolled" or "blocked" by the real view's motion. For each move key, a logistic regression learns that label from
features of the frame before the step, on the first half of the walks, and is scored on the second half:

* ``pixels``: the raw pixels of the tile the move goes to (what the rule of the game reads: is it walkable?);
* each checkpoint's I-token (the world model's embedding of the frame, the transformer's only view of it).

A world model can only be as sure of a wall as its I-token lets it be; the pixels row is what a perfect one could be.
What the world model makes of it (``one_step``, on the first ``--one-step-walks`` walks): primed on the real frames
before each move step, the view motion of its one sampled next frame, against the real one.
"""
from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import torch

from experiments.command import run_command
from experiments.scroll_code.cli import real_walks
from model.train.run_dir import write_json

MOVES = {"move_left": (0, -1), "move_right": (0, 1), "move_up": (-1, 0), "move_down": (1, 0)}
PLAYER = (3, 4)  # Crafter's player tile (row, column) in its 9x7 view of 7-pixel tiles (model/eval/keys.py)
TILE = 7


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoints", nargs="*", help="Crafter checkpoint or run folders whose I-tokens are probed")
    p.add_argument("--walks", type=int, default=200, help="held-out walks (seeds from --seed), half to fit, half to score")
    p.add_argument("--seed", type=int, default=20_000)
    p.add_argument("--keys", type=int, default=30, help="move keys per walk")
    p.add_argument("--weight-decay", type=float, default=0.3, help="the probe's L2 penalty (on standardised features)")
    p.add_argument("--one-step-walks", type=int, default=16, help="walks on which each world model steps once from real frames")
    p.add_argument("--json", default=None, help="write the results here")


def move_steps(walks: list[dict[str, Any]]) -> dict[str, Any]:
    """Every unambiguous move step: the frame before it, its key, whether the view scrolled, and its walk."""
    from model.data.envs import action_names

    names = action_names("crafter")
    frames, keys, scrolled, walk = [], [], [], []
    for w_i, w in enumerate(walks):
        for t, m in enumerate(w["motion"]):
            if m is not None:
                frames.append(w["frames"][t])
                keys.append(names[w["actions"][t]])
                scrolled.append(m != 0)
                walk.append(w_i)
    return {"frames": np.stack(frames), "keys": np.array(keys), "scrolled": np.array(scrolled), "walk": np.array(walk)}


def target_tile_pixels(frames: np.ndarray, keys: np.ndarray) -> np.ndarray:
    out = []
    for f, k in zip(frames, keys):
        r, c = PLAYER[0] + MOVES[k][0], PLAYER[1] + MOVES[k][1]
        out.append(f[r * TILE:(r + 1) * TILE, c * TILE:(c + 1) * TILE].reshape(-1) / 255.0)
    return np.asarray(out, np.float32)


@torch.inference_mode()
def i_tokens(path: str, frames: np.ndarray) -> np.ndarray:
    from app.bundle import ModelBundle
    from model.data.frames import to_tensor

    wm = ModelBundle.load(path, device="cpu").world_models[True].eval()
    return torch.cat([wm.embed_frames(to_tensor(frames[i:i + 256], "cpu")) for i in range(0, len(frames), 256)]).numpy()


ONE_STEP_CONTEXT = 8  # real frames a one-step dream is primed on (fewer at a walk's start)


def one_step(path: str, walks: list[dict[str, Any]]) -> dict[str, float]:
    """The world model (I-tokens) primed on the real frames before each unambiguous move step, one sampled step:
    how often its view moves as the real one does, and how often it stays still when the real view scrolls and when
    the move is blocked. With a motion input (``world_model.motion_input``), also how often its motion head's pick is
    the real motion (``head_agreement``) and how often the dream's view moves as the head said (``follows_head``)."""
    from app.bundle import ModelBundle
    from app.engine import PlaySession
    from model.data.frames import to_tensor
    from model.eval.keys import geometry_for, motion_errors

    torch.manual_seed(0)
    view = geometry_for("crafter")
    bundle = ModelBundle.load(path, device="cpu")
    wm = bundle.world_models[True]
    session = PlaySession(bundle, shadow=False, i_tokens=True)
    real, dream, head = [], [], []
    for w in walks:
        for t, m in enumerate(w["motion"]):
            if m is None:
                continue
            start = max(0, t + 1 - ONE_STEP_CONTEXT)
            session.reset_from_frames(list(w["frames"][start:t + 1]), w["actions"][start:t])
            frame = session.step(w["actions"][t]).dream_frame
            real.append(m)
            dream.append(int(np.argmin(motion_errors(w["frames"][t], frame, view))))
            if wm.motion:
                with torch.inference_mode():
                    logits = wm.motion_head(to_tensor(w["frames"][t][None], "cpu"), torch.tensor([w["actions"][t]]))
                head.append(int(logits.argmax(-1)))
    session.close()
    r, d = np.array(real), np.array(dream)
    out = {"steps": len(r), "agreement": float((r == d).mean()), "still_when_real_scrolls": float((d[r != 0] == 0).mean()),
           "still_when_blocked": float((d[r == 0] == 0).mean())}
    if head:
        h = np.array(head)
        out |= {"head_agreement": float((h == r).mean()), "follows_head": float((h == d).mean())}
    return out


def probe(x_fit: np.ndarray, y_fit: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, weight_decay: float) -> float:
    """Test accuracy of a logistic regression on standardised features (full-batch Adam, fixed seed)."""
    torch.manual_seed(0)
    a, b = torch.tensor(x_fit), torch.tensor(x_test)
    mu, sd = a.mean(0), a.std(0) + 1e-6
    a, b = (a - mu) / sd, (b - mu) / sd
    lin = torch.nn.Linear(a.shape[1], 1)
    opt = torch.optim.Adam(lin.parameters(), lr=1e-2, weight_decay=weight_decay)
    y = torch.tensor(y_fit, dtype=torch.float32)
    with torch.enable_grad():
        for _ in range(500):
            opt.zero_grad()
            torch.nn.functional.binary_cross_entropy_with_logits(lin(a)[:, 0], y).backward()
            opt.step()
    with torch.no_grad():
        return float(((lin(b)[:, 0] > 0).numpy() == y_test).mean())


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(1)
    walks = real_walks(args.seed, args.walks, args.keys)
    steps = move_steps(walks)
    fit = steps["walk"] < args.walks // 2
    features = {"pixels": target_tile_pixels(steps["frames"], steps["keys"])}
    features.update({path: i_tokens(path, steps["frames"]) for path in args.checkpoints})
    result: dict[str, Any] = {"walks": args.walks, "move_steps": int(len(fit)),
                              "blocked_share": float(1 - steps["scrolled"].mean()), "per_key": {}}
    for key in MOVES:
        k = steps["keys"] == key
        y_test = steps["scrolled"][k & ~fit]
        row: dict[str, Any] = {"steps": int(k.sum())}
        if (k & fit).any() and len(y_test):  # else too few walks: no figure for this key
            row["majority"] = float(max(y_test.mean(), 1 - y_test.mean()))
            for name, x in features.items():
                row[name] = probe(x[k & fit], steps["scrolled"][k & fit], x[k & ~fit], y_test, args.weight_decay)
        result["per_key"][key] = row
    print(f"{result['move_steps']} move steps, {result['blocked_share']:.0%} blocked; probe accuracy on the held-out half:")
    for key, row in result["per_key"].items():
        print(f"  {key:10s} " + "  ".join(f"{name} {v:.3f}" for name, v in row.items() if name != "steps"))
    result["one_step"] = {path: one_step(path, walks[:args.one_step_walks]) for path in args.checkpoints}
    for path, o in result["one_step"].items():
        print(f"{path}: one step from real frames on {o['steps']} move steps: the view moves as the real one "
              f"{o['agreement']:.3f}; still when the real view scrolls {o['still_when_real_scrolls']:.3f}, "
              f"when the move is blocked {o['still_when_blocked']:.3f}"
              + (f"; motion head right {o['head_agreement']:.3f}, the dream follows it {o['follows_head']:.3f}"
                 if "head_agreement" in o else ""))
    if args.json:
        write_json(args.json, result)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command("python -m experiments.motion_probe.cli", __doc__.split("\n\n")[0], add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
