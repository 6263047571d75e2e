"""The text report of `deltaplay eval checkpoint`: one table per measured part (the JSON has everything,
per step and per achievement)."""
from __future__ import annotations

import math
from typing import Any, Callable


def _f(x: Any, digits: int = 2) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        if math.isinf(x) or math.isnan(x):
            return str(x)
        return f"{x:.{digits}f}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"
    return str(x)


def table(header: list[str], rows: list[list[Any]]) -> str:
    """Left-aligned columns under a dashed rule, indented two spaces; floats to two decimals."""
    cells = [header] + [[_f(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join("  " + s for s in lines)


def _recon(rec: dict[str, Any]) -> list[str]:
    rows = [[name, v.get("tokens_per_frame", 0), v["bits_per_frame"], f"{v['mse_mean']:.5f}", v["psnr_mean"],
             v["psnr_median"], v["psnr_worst1pct"], v["psnr_of_mean_mse"]] for name, v in rec.items()]
    return ["Reconstruction of x_t (PSNR in dB; worst 1% = PSNR of the mean MSE of the worst 1% frames)",
            table(["tokenizer", "K", "bits/frame", "MSE", "PSNR mean", "median", "worst 1%", "of mean MSE"], rows)]


def _dynamics(dyn: dict[str, Any]) -> list[str]:
    rows = [[k, v["accuracy"], v["majority_accuracy"], v["cross_entropy"], v["segments"], v["steps"]]
            for k, v in dyn["token_accuracy"].items()]
    out = ["World model, teacher-forced next-token accuracy on held-out segments",
           table(["world model", "accuracy", "majority", "CE (nats)", "segments", "steps"], rows)]
    ro = dyn["rollout"]
    if "error" in ro:
        return out + [f"  rollouts: {ro['error']}"]
    h = ro["horizon"]
    marks = sorted({1, min(5, h), min(10, h), h})
    rows = [[k] + [v["psnr_per_step"][m - 1] for m in marks] + [f"{v['mse_mean']:.5f}"]
            for k, v in ro.items() if isinstance(v, dict)]
    return out + ["", f"Imagined vs real frames, same actions ({ro['starts']} starts, context {ro['context']}, "
                      f"temperature {ro['temperature']}): PSNR in dB at step",
                  table(["rollout"] + [f"step {m}" for m in marks] + ["MSE mean"], rows)]


def _rewards(rewards: dict[str, Any]) -> list[str]:
    rows = [[k, outcome, v[outcome]["steps"], v[outcome]["predicted_reward"], v[outcome]["end_probability"]]
            for k, v in rewards.items() for outcome in ("positive", "negative", "zero", "terminal")]
    return ["World model, teacher-forced reward and end predictions on held-out steps, by the real outcome",
            table(["world model", "real step", "steps", "mean predicted reward", "mean end prob."], rows)]


def _agent(a: dict[str, Any]) -> list[str]:
    rows = []
    for k in ("agent", "random"):
        v = a.get(k, {})
        if "error" in v:
            rows.append([k, v["error"], "", "", "", ""])
        else:
            rows.append([k, v["return_mean"], v["return_std"], v["length_mean"], v.get("crafter_score"),
                         v["cut_by_max_steps"]])
    limit = a["env_length_limit"]
    cap = a["max_steps"] or (f"env limit {limit}" if limit else "the env's own limit")
    out = [f"Agent in the real env: {a['episodes']} episodes per policy on the same seeds (max steps: {cap})",
           table(["policy", "return", "std", "length", "Crafter score", "cut"], rows)]
    rates = a.get("agent", {}).get("success_rates")
    if rates:
        rnd = a["random"].get("success_rates", {})
        top = sorted(rates, key=lambda n: -rates[n])
        out.append("  success rates % (agent / random): " + ", ".join(
            f"{n} {rates[n]:.0f}/{rnd.get(n, 0):.0f}" for n in top if rates[n] > 0 or rnd.get(n, 0) > 0))
    return out


def _feel(f: dict[str, Any]) -> list[str]:
    return [f"Feel: one dream step at batch 1: {f['ms_per_step']:.1f} ms = {f['steps_per_s']:.1f} steps/s "
            f"({f['device']}, {f['threads']} threads, {f['steps']} steps)"]


def _keys(k: dict[str, Any]) -> list[str]:
    if "error" in k:
        return [f"Dream under the move keys: {k['error']}"]
    rows = [[name, v["agreement"], v["pairs"], v["ambiguous"], v["still_baseline"], v["key_baseline"]]
            + [v["per_motion"].get(m, {}).get("same") for m in ("left", "right", "up", "down", "none")]
            + [v.get(part, {}).get("agreement") for part in ("first_view", "unseen")]
            for name, v in k.items() if isinstance(v, dict) and "agreement" in v]
    return [f"Dream under the move keys: does the view scroll as the real one does? ({k['walks']} walks of "
            f"{k['steps']} keys, temperature {k['temperature']}; real_tokens: the real pairs' tokens decoded in a "
            "closed loop; best_tokens: the tokens from each decoded frame to the real next one, a perfect world "
            "model of the dream; random_tokens: uniformly random tokens, a world model that knows nothing; teacher_forced: the real tokens, each decoded from the real previous frame, no loop; simulator: the game itself, the real first view and the terrain beyond it drawn from another world, about the best a world model that cannot see that terrain can score; baselines: a dream that never scrolls, one that always follows the key; first view / unseen: the agreement on moves into tiles of the walk's first view and on the rest, whose walls the world model never saw)",
            table(["world model", "agreement", "pairs", "ambiguous", "never", "always", "left", "right", "up",
                   "down", "none", "first view", "unseen"], rows)]


def _terrain(t: dict[str, Any]) -> list[str]:
    if "error" in t:
        return [f"Dream terrain: {t['error']}"]
    variants = {name: v for name, v in t.items() if isinstance(v, dict)}
    if all("clean_share" in v for v in variants.values()):
        rows = [[name, v["clean_share"], v["frames"], v["real_clean_share"]] for name, v in variants.items()]
        return [f"Dream frames the real env could draw (one agent, no tile that matches nothing; {t['walks']} random "
                f"walks of {t['steps']} steps)", table(["world model", "clean", "frames", "real env"], rows)]
    kinds = list(next(iter(variants.values()))["presence"])
    rows = [[name, v["real_share"], v["dream_share"], v["relative"], v["unknown_share"]]
            + [f"{p['dream_too']}/{p['real_walks']}" for p in v["presence"].values()] for name, v in variants.items()]
    return [f"Dream terrain at steps {t['steps'][0]}-{t['steps'][1]} of the key walks: share of tiles that are "
            "terrain other than grass, real vs dream; unknown: dream tiles that match no real tile; per kind: walks "
            "whose dream shows it / walks whose real env shows it",
            table(["world model", "real", "dream", "relative", "unknown"] + kinds, rows)]


SECTIONS: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "recon": _recon, "dynamics": _dynamics, "rewards": _rewards, "agent": _agent, "feel": _feel, "keys": _keys,
    "terrain": _terrain}


def format_report(r: dict[str, Any]) -> str:
    """The results as text tables, in the order of the parts."""
    out = [f"\nΔ-IRIS checkpoint evaluation: {r['checkpoint']}",
           f"env {r['env']}, preset {r['preset']}, device {r['device']}, {r['threads']} threads, "
           f"first seed {r['seed']}"]
    if "data" in r:
        d = r["data"]
        out.append(f"held-out data: {d['transitions']} transitions from {d['episodes']} episodes "
                   f"(policy: {d['policy']}, seeds {d['seeds'][0]}..{d['seeds'][-1]})")
    for part, section in SECTIONS.items():
        if part in r:
            out += [""] + section(r[part])
    out.append("timings (s): " + ", ".join(f"{k} {v}" for k, v in r["timings_s"].items()))
    return "\n".join(out)
