"""Where does a Δ-tokenizer's Crafter terrain go when its own frames feed it? Real walks, decoded two ways.

    python -m experiments.closed_loop.cli CHECKPOINT [CHECKPOINT ...] --walks 16 --json out.json

For each checkpoint's tokenizer, on held-out walks of move keys (the keys check's walks, seeds from --seed):
* teacher-forced: each real pair's tokens decoded from the real previous frame (no loop): PSNR, and the terrain
  share of its frames at steps 21-30 by the tile judge of ``deltaplay eval checkpoint --parts terrain``;
* closed loop: the same tokens, each decoded from the previous *decoded* frame, as a perfect world model's dream:
  PSNR against the real frame at steps 1, 5, 10, 20 and 30, the keys agreement, the terrain share and the share of
  tiles that match no real tile at steps 21-30;
* the strip a scroll brings into view, teacher-forced, decoded from the quantized tokens and from the encoder's
  unrounded FSQ values (the same decoder given every bit the encoder computed: is the strip short of bits?).
"""
from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import torch

from app.cli import UserError
from experiments.command import run_command
from model.train.run_dir import write_json

PSNR_STEPS = (1, 5, 10, 20, 30)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoints", nargs="+", help="checkpoint folders with a Crafter Δ-tokenizer")
    p.add_argument("--walks", type=int, default=16, help="held-out walks (seeds from --seed)")
    p.add_argument("--seed", type=int, default=10_000)
    p.add_argument("--keys", type=int, default=30, help="move keys per walk")
    p.add_argument("--json", default=None, help="write the results here")


def _strip_mse(tok, prev, actions, nxt, motions, view) -> dict[str, list[float]]:
    """Mean squared error on the new strip of scroll steps, from rounded and unrounded FSQ values."""
    from model.data.view_motion import new_strip

    q = tok.quantizer
    u = torch.sigmoid(q.proj_in(tok.to_patches(tok.latent(prev, actions, nxt))).float()) * q.top
    strip = new_strip(motions, view, nxt.size(-1)).expand(-1, 3, -1, -1).float()
    out = {}
    for name, digits in (("tokens", u.round()), ("unrounded", u)):
        img = tok.image(prev, actions, tok.from_patches(q.proj_out(digits / q.top * 2 - 1))).float().clamp(0, 1)
        out[name] = ((img - nxt).pow(2) * strip).flatten(1).sum(1).div(strip.flatten(1).sum(1)).tolist()
    return out


@torch.inference_mode()
def measure(path: str, walks: list[dict[str, Any]], judge) -> dict[str, Any]:
    from app.bundle import ModelBundle
    from model.data.frames import to_tensor, to_uint8
    from model.eval.keys import agreement, closed_loop, geometry_for, score_walk
    from model.eval.parts import frame_mse, psnr_from_mse
    from model.eval.terrain import UNKNOWN, terrain_share

    tok = ModelBundle.load(path, device="cpu").tokenizer.eval()
    if getattr(tok, "kind", None) != "delta" or not hasattr(tok.quantizer, "top"):
        raise UserError(f"{path}: this study needs a Δ-tokenizer with FSQ tokens")
    view = geometry_for("crafter")
    teacher, closed_psnr, triples = [], [], []
    terrain = {"teacher": [], "closed": [], "closed_unknown": []}
    strip = {"tokens": [], "unrounded": []}
    for w in walks:
        x, a = to_tensor(w["frames"], "cpu"), torch.tensor(w["actions"])
        recon = tok.reconstruct(x[:-1], a, x[1:])[0]
        loop = closed_loop(tok, x[None], a[None])[0]
        teacher += psnr_from_mse(frame_mse(recon, x[1:]).numpy()).tolist()
        closed_psnr.append(psnr_from_mse(frame_mse(loop, x[1:]).numpy()))
        late = slice(20, None)  # steps 21-30 of a 30-key walk
        views = [judge.classify(f) for f in to_uint8(loop[late])]
        terrain["teacher"].append(terrain_share([judge.classify(f) for f in to_uint8(recon[late])]))
        terrain["closed"].append(terrain_share(views))
        terrain["closed_unknown"].append(float(np.mean([(v == UNKNOWN).mean() for v in views])))
        triples += score_walk(list(w["frames"]), [w["frames"][0]] + list(to_uint8(loop)), w["keys"], view)[0]
        scrolls = [t for t, m in enumerate(w["motion"]) if m]
        if scrolls:
            s = _strip_mse(tok, x[:-1][scrolls], a[scrolls], x[1:][scrolls],
                           torch.tensor([w["motion"][t] for t in scrolls]), view)
            for k in strip:
                strip[k] += s[k]
    closed = np.stack(closed_psnr)
    return {"checkpoint": path, "walks": len(walks),
            "teacher_psnr_median": float(np.median(teacher)), "teacher_terrain_share": float(np.mean(terrain["teacher"])),
            "closed_psnr_median_at_step": {t: float(np.median(closed[:, t - 1])) for t in PSNR_STEPS if t <= closed.shape[1]},
            "closed_keys_agreement": agreement(triples)["agreement"],
            "closed_terrain_share": float(np.mean(terrain["closed"])),
            "closed_unknown_share": float(np.mean(terrain["closed_unknown"])),
            "strip_scroll_steps": len(strip["tokens"]),
            "strip_psnr_tokens": float(psnr_from_mse(np.mean(strip["tokens"]))),
            "strip_psnr_unrounded": float(psnr_from_mse(np.mean(strip["unrounded"])))}


def real_walks(seed: int, walks: int, keys: int) -> list[dict[str, Any]]:
    from experiments.scroll_code.cli import real_walks as scroll_walks
    from model.data.envs import action_names

    names = action_names("crafter")
    out = scroll_walks(seed, walks, keys)
    for w in out:
        w["keys"] = [names[i] for i in w["actions"]]
    return out


def run(args: argparse.Namespace) -> int:
    from app.eval_walks import tile_judge

    torch.set_num_threads(1)
    if args.keys < 21:
        raise UserError("--keys must be at least 21 (the terrain is judged from step 21 on)")
    walks = real_walks(args.seed, args.walks, args.keys)
    judge = tile_judge("crafter", args.seed + 200_000)  # the judge of `deltaplay eval checkpoint --seed SEED`
    results = [measure(path, walks, judge) for path in args.checkpoints]
    for r in results:
        at = ", ".join(f"{t}: {v:.1f}" for t, v in r["closed_psnr_median_at_step"].items())
        print(f"{r['checkpoint']}: teacher-forced {r['teacher_psnr_median']:.2f} dB, terrain "
              f"{r['teacher_terrain_share']:.1%}; closed loop PSNR by step ({at}) dB, keys "
              f"{r['closed_keys_agreement']:.3f}, terrain {r['closed_terrain_share']:.1%}, unknown tiles "
              f"{r['closed_unknown_share']:.1%}; new strip {r['strip_psnr_tokens']:.2f} dB from the tokens, "
              f"{r['strip_psnr_unrounded']:.2f} dB unrounded ({r['strip_scroll_steps']} scroll steps)")
    if args.json:
        write_json(args.json, results)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command("python -m experiments.closed_loop.cli", __doc__.split("\n\n")[0], add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
