"""Where do the dream's wrong motions come from: the motion head's pick, or a transformer that does not follow it?

    python -m experiments.motion_reading.diagnose checkpoints/crafter --walks 32 --json diag.json

The keys walks (held-out seeds from 10000, 30 move keys each, the I-token world model through the play engine); at
each unambiguous real step: the real motion, the dream's motion, the motion head's pick on the dream's frame (what
the transformer was told) and its pick on the real frame.
"""
from __future__ import annotations

import argparse

from experiments.command import run_command
from model.train.run_dir import write_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="checkpoint folder (e.g. checkpoints/crafter)")
    p.add_argument("--walks", type=int, default=32)
    p.add_argument("--seed", type=int, default=10_000, help="first walk's seed")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)


def diagnose(checkpoint: str, walks: int, seed: int) -> dict:
    import numpy as np
    import torch

    from app.bundle import ModelBundle
    from app.cli import UserError
    from app.engine import PlaySession
    from model.data.frames import to_tensor
    from model.data.view_motion import classify, geometry_for, motion_errors
    from model.eval.keys import first_view_steps, walk_keys

    bundle = ModelBundle.load(checkpoint, device="cpu")
    wm = bundle.world_models.get(True)
    if wm is None or not wm.motion or bundle.cfg.env.scroll_view is None:
        raise UserError(f"{checkpoint}: needs an I-token world model with a motion input, in an env with a scrolling view")
    view = geometry_for(bundle.env_name)
    picks: list[int] = []  # the motion input of each dream step (a flush's re-prime reads the head too: not counted)
    plain_step = wm.generate_step

    def record(cache, *args, **kwargs):
        out = plain_step(cache, *args, **kwargs)
        picks.append(int(cache.motion[0]))
        return out

    rows = []  # per unambiguous real step: the head's pick on the dream frame and on the real one, real, dream, inside
    torch.manual_seed(seed)
    wm.generate_step = record
    try:
        for s in range(seed, seed + walks):
            keys = walk_keys(s, 30)
            session = PlaySession(bundle, shadow=True, seed=s, temperature=1.0, i_tokens=True)
            on_real = []
            try:
                infos = [session.reset(s)]
                for k in keys:
                    a = session.action_names.index(k)
                    with torch.no_grad():
                        frame = to_tensor(np.array(infos[-1].real_frame), "cpu")[None].float()
                        on_real.append(int(wm._motions(frame, torch.tensor([a]))[0]))
                    infos.append(session.step(a))
            finally:
                session.close()
            inside = set(first_view_steps([i.real_pos for i in infos[:-1]], keys, view))
            for t, (pick, head_real) in enumerate(zip(picks[-len(keys):], on_real)):
                real = classify(motion_errors(infos[t].real_frame, infos[t + 1].real_frame, view))
                if real is not None:
                    dream = int(np.argmin(motion_errors(infos[t].dream_frame, infos[t + 1].dream_frame, view)))
                    rows.append([pick, head_real, real, dream, int(t in inside)])
    finally:
        del wm.generate_step  # the class's method again
    pick, on_real, real, dream, first = np.array(rows).T
    first = first.astype(bool)

    def mean(x) -> float | None:  # None: no step of that kind
        return float(x.mean()) if x.size else None

    def rates(sel) -> dict:
        ok = pick == real
        return {"pairs": int(sel.sum()), "dream_right": mean(dream[sel] == real[sel]),
                "head_right_on_dream_frames": mean(ok[sel]),
                "head_right_on_real_frames": mean(on_real[sel] == real[sel]),
                "dream_follows_head": mean(dream[sel] == pick[sel]),
                "dream_right_when_head_right": mean(dream[sel & ok] == real[sel & ok]),
                "dream_right_when_head_wrong": mean(dream[sel & ~ok] == real[sel & ~ok])}

    return {"checkpoint": str(checkpoint), "walks": walks, "seeds": [seed, seed + walks - 1],
            "all": rates(np.ones_like(first)), "moved": rates(real > 0), "blocked": rates(real == 0),
            "first_view": rates(first), "unseen": rates(~first)}


def run(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(args.threads)
    out = diagnose(args.checkpoint, args.walks, args.seed)
    cols = ("pairs", "dream_right", "head_right_on_dream_frames", "head_right_on_real_frames", "dream_follows_head",
            "dream_right_when_head_right", "dream_right_when_head_wrong")
    print("steps        " + "  ".join(c.replace("_", " ") for c in cols))
    for part in ("all", "moved", "blocked", "first_view", "unseen"):
        row = out[part]
        print(f"{part:<11}  " + "  ".join(f"{'-' if row[c] is None else row[c]:>{len(c)}}" if c == "pairs" or row[c] is None
                                           else f"{row[c]:>{len(c)}.3f}"
                                           for c in cols))
    if args.json:
        write_json(args.json, out)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command("python -m experiments.motion_reading.diagnose", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
