"""The parts of `deltaplay eval checkpoint` that walk the dream through the play engine: ``keys`` (does the view
scroll as the real one does under the same move keys?) and ``terrain`` (what is the dream's world made of?).
Both read the same walks, dreamed once per world model (:func:`key_walks`)."""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.evaluate import EvalRun, ProgressLine


def _dream_walks(bundle, i_tokens: bool, seeds: list[int], keys: dict[int, list[str]], temperature: float,
                 progress: ProgressLine) -> list[tuple[list, list, list]]:
    """(real frames, dreamed frames, the real player's positions) of each walk through the play engine, the real
    env as its shadow."""
    from app.engine import PlaySession

    name = "i_tokens" if i_tokens else "no_i_tokens"
    walks = []
    for w, seed in enumerate(seeds):
        session = PlaySession(bundle, shadow=True, seed=seed, temperature=temperature, i_tokens=i_tokens)
        try:
            infos = [session.reset(seed)] + [session.step(session.action_names.index(k)) for k in keys[seed]]
        finally:
            session.close()
        walks.append(([i.real_frame for i in infos], [i.dream_frame for i in infos], [i.real_pos for i in infos]))
        progress(f"keys ({name})", w + 1, len(seeds))
    return walks


# Tokens decoded without a world model, each a yardstick for the dream: the real pairs' tokens decoded in a closed
# loop (a perfect world model), the tokens from each decoded frame to the real next one (a perfect world model of the
# dream), uniformly random tokens (one that knows nothing), and the real pairs' tokens each decoded from the real
# previous frame (no loop at all: what the tokenizer draws one frame at a time).
TOKEN_WALKS = ("real_tokens", "best_tokens", "random_tokens", "teacher_forced")


def _token_walk(bundle, real: list, keys: list[str], kind: str) -> list:
    """One walk decoded from tokens of ``kind`` (:data:`TOKEN_WALKS`; :func:`model.eval.keys.closed_loop`,
    :func:`model.eval.keys.random_loop`), its first frame the real one."""
    import numpy as np
    import torch

    from model.data.envs import action_names
    from model.data.frames import to_tensor, to_uint8
    from model.eval.keys import closed_loop, random_loop

    names = action_names(bundle.env_name)
    acts = torch.tensor([[names.index(k) for k in keys]], device=bundle.device)
    frames = to_tensor(np.stack(real), bundle.device)[None]
    tok = bundle.tokenizer
    if kind == "random_tokens":
        out = random_loop(tok, frames[:, 0], acts)
    elif kind == "teacher_forced":
        prev, nxt = frames[0, :-1], frames[0, 1:]
        with torch.no_grad():
            out = tok.reconstruct(prev, acts[0], nxt)[0][None]
    else:
        out = closed_loop(tok, frames, acts, from_decoded=kind == "best_tokens")
    return [real[0]] + list(to_uint8(out[0]))


def key_walks(ev: EvalRun, bundle) -> dict[str, Any]:
    """The key walks, dreamed once by each world model and shared by the keys and terrain parts: seeds, keys and
    (real frames, dreamed frames) per variant, plus, for a Δ-tokenizer, the walks decoded from tokens alone
    (:data:`TOKEN_WALKS`), and on Crafter the game's own simulator walked with the same keys
    (:mod:`model.eval.simulator`)."""
    from model.eval.keys import walk_keys
    from model.eval.parts import heldout_seeds

    if ev.walks is None:
        args = ev.args
        seeds = heldout_seeds(args.seed, args.walks, ev.exclude)
        keys = {seed: walk_keys(seed, args.walk_steps) for seed in seeds}
        walked = {("i_tokens" if on else "no_i_tokens"): _dream_walks(bundle, on, seeds, keys, args.temperature,
                                                                      ev.progress)
                  for on in sorted(bundle.world_models, reverse=True)}
        dreams = {name: [(real, dream) for real, dream, _ in w] for name, w in walked.items()}
        first = next(iter(walked.values()))  # the real walks are the same in every variant
        positions = {seed: pos for seed, (_, _, pos) in zip(seeds, first)}
        if getattr(bundle.tokenizer, "kind", None) == "delta":
            for name in TOKEN_WALKS:
                dreams[name] = [(real, _token_walk(bundle, real, keys[seed], name)) for seed, (real, _, _)
                                in zip(seeds, first)]
        if bundle.env_name == "crafter":  # the game itself, drawing the unseen terrain anew: the yardstick's top
            from model.eval.simulator import simulator_walk

            dreams["simulator"] = [(real, simulator_walk(seed, keys[seed]))
                                   for seed, (real, _, _) in zip(seeds, first)]
        ev.walks = {"seeds": seeds, "keys": keys, "dreams": dreams, "positions": positions}
    return ev.walks


def part_keys(ev: EvalRun) -> dict[str, Any]:
    """Walk the dream with move keys beside the real env (the play engine's shadow, same start and keys)
    and score each step's view motion (:mod:`model.eval.keys`), for each world model of the checkpoint."""
    from app.bundle import ModelBundle
    from model.eval.keys import agreement, first_view_steps, geometry_for, score_split

    args = ev.args
    bundle = ModelBundle.load(ev.path, device=str(ev.device))
    try:
        view = geometry_for(bundle.env_name)
    except ValueError as e:
        return {"error": str(e)}
    walks = key_walks(ev, bundle)
    seeds, keys = walks["seeds"], walks["keys"]
    out: dict[str, Any] = {"walks": len(seeds), "steps": args.walk_steps, "seeds": [seeds[0], seeds[-1]],
                           "temperature": args.temperature}
    positions = walks["positions"]
    seen = ({seed: set(first_view_steps(positions[seed], keys[seed], view)) for seed in seeds}
            if all(None not in positions[seed] for seed in seeds) else None)
    for name, pairs in walks["dreams"].items():
        # moves into tiles of the first view (the real world's walls were in sight) and the rest; without the real
        # player's positions, every step counts as the rest
        split = [score_split(real, dream, keys[seed], view, seen[seed] if seen else ())
                 for seed, (real, dream) in zip(seeds, pairs)]
        out[name] = {**agreement([t for first, rest, _ in split for t in first + rest]),
                     "ambiguous": sum(n for _, _, n in split)}
        if seen is not None:
            for i, part in enumerate(("first_view", "unseen")):
                a = agreement([t for s in split for t in s[i]])
                out[name][part] = {"pairs": a["pairs"], "agreement": a["agreement"]}
    return out


@functools.lru_cache(maxsize=4)
def tile_judge(env: str, first_seed: int):
    """The tile judge of ``env``, from 20 real walks of 40 keys on seeds from ``first_seed`` (built once per process)."""
    from model.eval.terrain import TileJudge

    return TileJudge.collect(env, seeds=list(range(first_seed, first_seed + 20)), steps=40)


def part_terrain(ev: EvalRun) -> dict[str, Any]:
    """What the dream's world is made of, tile by tile (:mod:`model.eval.terrain`)."""
    from app.bundle import ModelBundle
    from model.eval.terrain import GRIDS

    bundle = ModelBundle.load(ev.path, device=str(ev.device))
    env = bundle.env_name
    if env not in GRIDS:
        return {"error": f"{env!r} has no tile grid to judge (only {', '.join(GRIDS)})"}
    judge = tile_judge(env, ev.args.seed + 200_000)
    if env == "gridworld":
        return _gridworld_terrain(ev, bundle, judge)
    from model.eval.terrain import terrain_mix

    walks = key_walks(ev, bundle)
    last = slice(max(1, ev.args.walk_steps - 9), ev.args.walk_steps + 1)  # the last ten steps' frames
    out: dict[str, Any] = {"steps": [last.start, last.stop - 1]}
    for name, pairs in walks["dreams"].items():
        out[name] = terrain_mix([([judge.classify(f) for f in real[last]], [judge.classify(f) for f in dream[last]])
                                 for real, dream in pairs])
    return out


def _gridworld_terrain(ev: EvalRun, bundle, judge) -> dict[str, Any]:
    """Random walks of 50 steps in each world model's dream: the share of frames that show exactly one agent and
    no tile that matches no GridWorld object (the real env's own frames score 1)."""
    import numpy as np

    from app.engine import PlaySession
    from model.eval.parts import heldout_seeds
    from model.eval.terrain import clean_gridworld_frame

    seeds = heldout_seeds(ev.args.seed, ev.args.walks, ev.exclude)
    out: dict[str, Any] = {"walks": len(seeds), "steps": 50}
    for on in sorted(bundle.world_models, reverse=True):
        clean, real_clean = [], []
        for seed in seeds:
            rng = np.random.default_rng(seed)
            session = PlaySession(bundle, shadow=True, seed=seed, temperature=ev.args.temperature, i_tokens=on)
            try:
                infos = [session.reset(seed)]
                for _ in range(50):
                    infos.append(session.step(int(rng.integers(len(session.action_names)))))
                    if infos[-1].real_done:
                        break
            finally:
                session.close()
            clean += [clean_gridworld_frame(judge.classify(i.dream_frame)) for i in infos[1:]]
            real_clean += [clean_gridworld_frame(judge.classify(i.real_frame)) for i in infos[1:]]
        out["i_tokens" if on else "no_i_tokens"] = {"frames": len(clean), "clean_share": float(np.mean(clean)),
                                                    "real_clean_share": float(np.mean(real_clean))}
    return out
