"""Is the terrain that scrolls into view learnable? A Crafter checkpoint's code and world model on held-out walks.

    python -m experiments.scroll_code.cli checkpoints/crafter runs/other/checkpoints/last --json out.json

For each checkpoint, on straight walks of move keys from held-out seeds (the keys part's walks):

* the Δ-tokenizer's reconstruction PSNR (median, of the mean MSE, worst 5%) of the real transitions, and on the steps
  that scroll, of the strip that comes into view alone (``model.data.view_motion.new_strip``);
* how many distinct codes each token position takes on the steps that scroll (near one per step: a code of the
  encoder's choosing that the world model cannot learn from repeats);
* the world model's teacher-forced negative log-likelihood of the real tokens, in nats per token, on scroll steps
  and on still steps, beside the uniform guess ln V.
"""
from __future__ import annotations

import argparse
import math
from typing import Any

import numpy as np
import torch

from experiments.command import run_command
from model.train.run_dir import write_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoints", nargs="+", help="Crafter checkpoint or run folders")
    p.add_argument("--walks", type=int, default=16, help="held-out walks (seeds from --seed)")
    p.add_argument("--seed", type=int, default=10_000)
    p.add_argument("--keys", type=int, default=20, help="move keys per walk (the world model sees them in one window)")
    p.add_argument("--json", default=None, help="write the results here")


def real_walks(seed: int, walks: int, keys: int) -> list[dict[str, Any]]:
    """Frames, actions and the real view motion of each step (None where a still and a scrolled view look alike)."""
    from model.data.envs import action_names, make_env
    from model.eval.keys import classify, geometry_for, motion_errors, walk_keys

    names, view, out = action_names("crafter"), geometry_for("crafter"), []
    for s in range(seed, seed + walks):
        env = make_env("crafter")
        frames, pressed = [env.reset(seed=s)[0]], walk_keys(s, keys)
        for key in pressed:
            frames.append(env.step(names.index(key))[0])
        env.close()
        motion = [classify(motion_errors(frames[t], frames[t + 1], view)) for t in range(keys)]
        out.append({"frames": np.stack(frames), "actions": [names.index(k) for k in pressed], "motion": motion})
    return out


@torch.inference_mode()
def measure(path: str, walks: list[dict[str, Any]]) -> dict[str, Any]:
    from app.bundle import ModelBundle
    from model.data.frames import to_tensor
    from model.data.view_motion import geometry_for, new_strip
    from model.eval.parts import teacher_forced

    bundle = ModelBundle.load(path, device="cpu")
    tok, wm = bundle.tokenizer.eval(), bundle.world_models[True].eval()
    psnr, scroll_codes, nll, strip_mse = [], [], {"scroll": [], "still": []}, []
    view = geometry_for("crafter")
    for w in walks:
        x = to_tensor(w["frames"], "cpu")
        a = torch.tensor(w["actions"])
        recon, _ = tok.reconstruct(x[:-1], a, x[1:])
        mse = (recon - x[1:]).pow(2).flatten(1).mean(1).clamp_min(1e-10)
        psnr += (10 * torch.log10(1 / mse)).tolist()
        scrolls = [t for t, m in enumerate(w["motion"]) if m]
        if scrolls:
            strip = new_strip(torch.tensor([w["motion"][t] for t in scrolls]), view, x.size(-1)).expand(-1, 3, -1, -1)
            err = (recon[scrolls] - x[1:][scrolls]).pow(2)
            strip_mse += ((err * strip).flatten(1).sum(1) / strip.flatten(1).sum(1)).tolist()
        out, tokens = teacher_forced(tok, wm, x[None], a[None])
        per_token = torch.nn.functional.cross_entropy(out.token_logits[0].float().flatten(0, 1),
                                                      tokens[0].flatten(), reduction="none").view(tokens.shape[1:])
        for t, m in enumerate(w["motion"]):
            if m is None:
                continue
            kind = "still" if m == 0 else "scroll"
            nll[kind] += per_token[t].tolist()
            if kind == "scroll":
                scroll_codes.append(tokens[0, t].tolist())
    codes = np.array(scroll_codes)
    p = np.array(psnr)
    return {"checkpoint": str(path), "decoder": bundle.cfg.tokenizer.decoder,
            "recon_psnr_median": float(np.median(p)),
            "recon_psnr_of_mean_mse": float(10 * np.log10(1 / np.mean(10 ** (-p / 10)))),
            "recon_psnr_worst5pct": float(np.percentile(p, 5)),
            "new_strip_psnr_of_mean_mse": float(10 * np.log10(1 / max(np.mean(strip_mse), 1e-10))),
            "scroll_steps": len(codes), "distinct_codes_per_position": [len(set(codes[:, k])) for k in range(codes.shape[1])],
            "nll_scroll": float(np.mean(nll["scroll"])), "nll_still": float(np.mean(nll["still"])),
            "nll_uniform": math.log(tok.vocab_size)}


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(1)
    walks = real_walks(args.seed, args.walks, args.keys)
    results = [measure(path, walks) for path in args.checkpoints]
    for r in results:
        print(f"{r['checkpoint']} ({r['decoder']}): recon median {r['recon_psnr_median']:.2f} dB, of mean MSE "
              f"{r['recon_psnr_of_mean_mse']:.2f}, worst 5% {r['recon_psnr_worst5pct']:.2f}, the strip a scroll brings "
              f"into view {r['new_strip_psnr_of_mean_mse']:.2f}; {r['scroll_steps']} "
              f"scroll steps, distinct codes per position {r['distinct_codes_per_position']}; NLL nats/token "
              f"scroll {r['nll_scroll']:.2f}, still {r['nll_still']:.2f} (uniform {r['nll_uniform']:.2f})")
    if args.json:
        write_json(args.json, results)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command("python -m experiments.scroll_code.cli", __doc__.split("\n\n")[0], add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
