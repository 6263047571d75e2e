"""How high can the keys metric go? The game itself, drawing the terrain it has not shown yet anew, walked beside
the real world.

    python -m experiments.keys_ceiling.cli --walks 64 --json ceiling.json

`deltaplay eval checkpoint --parts keys` compares the dream's view motion with the real env's under the same move
keys. A move is blocked when the tile it leads to is a wall (tree, water, stone, table, a creature). A world model
sees the first view and nothing else of the real world: every tile that scrolls in later it draws itself, and a
perfect world model draws it from the game's own distribution, not the real world's draw. So the "glued" world
here is the real world inside the first view (9 x 7 tiles around the player) and another seed's world outside it,
materials and creatures; it is walked with the real walk's keys and scored by the keys metric against the real
walk, in all, on moves into tiles of the first view, and on the rest (:func:`model.eval.keys.first_view_steps`).

With a donor seed, a lower bound of what a perfect world model scores: the donor's terrain ignores the first view,
where the game's own would continue a lake or a forest across its edge. ``--match-bank N`` takes the donor from a
bank of N other worlds instead: the one whose first view best matches the real one, tile by tile (ties drawn at
random), so the glued terrain continues what the view shows as the game's own worlds do: a sample of the unseen
terrain given the first view, as near as the bank allows. ``--radius R`` also tries places up to R tiles from each
world's spawn, shifted under the player; Crafter clears the terrain around the spawn, so a shifted world misplaces
that clearing (the README's table).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from experiments.command import run_command
from model.eval.simulator import DONOR_OFFSET, simulator_walk
from model.train.run_dir import write_json


def material_codes(world) -> np.ndarray:
    """A world's material map in one fixed code for every world (each Crafter world numbers its materials in the
    order it first placed them)."""
    import crafter

    names = [None, *crafter.constants.materials]
    lut = np.array([names.index(world._mat_names[i]) for i in range(len(world._mat_names))], dtype=np.uint8)
    return lut[world._mat_map]


def donor_bank(count: int, first_seed: int) -> np.ndarray:
    """The material maps (count, 64, 64) of ``count`` fresh worlds from seed ``first_seed`` on."""
    from model.data.envs.crafter_env import CrafterEnv

    env, maps = CrafterEnv(), []
    for seed in range(first_seed, first_seed + count):
        env.reset(seed=seed)
        maps.append(material_codes(env._env._world))
    env.close()
    return np.stack(maps)


def best_match(view: np.ndarray, bank: np.ndarray, radius: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """The bank world and centre (index, x, y) whose tiles around it agree with ``view`` (the real first view's
    2*hx+1 x 2*hy+1 codes, player at the centre, which is not compared) on the most tiles, among centres within
    ``radius`` of the world's middle; ties drawn at random. Returns (index, x, y, tiles that agree)."""
    from numpy.lib.stride_tricks import sliding_window_view

    wx, wy = view.shape
    hx, hy = wx // 2, wy // 2
    windows = sliding_window_view(bank, (wx, wy), axis=(1, 2))  # (N, 64-wx+1, 64-wy+1, wx, wy), centre + h
    mask = np.ones_like(view, dtype=bool)
    mask[hx, hy] = False
    mid_x, mid_y = bank.shape[1] // 2, bank.shape[2] // 2
    xs = slice(mid_x - radius - hx, mid_x + radius - hx + 1)
    ys = slice(mid_y - radius - hy, mid_y + radius - hy + 1)
    agree = ((windows[:, xs, ys] == view) & mask).sum(axis=(-2, -1))
    best = np.argwhere(agree == agree.max())
    i, x, y = best[rng.integers(len(best))]
    return int(i), int(x) + xs.start + hx, int(y) + ys.start + hy, int(agree.max())


def walk_pair(seed: int, donor_seed: int, keys: list[str],
              donor_centre: tuple[int, int] | None = None) -> tuple[list, list, list]:
    """(real frames, glued frames, the real player's positions before each step) under ``keys``."""
    from model.data.envs import action_names, make_env

    names = action_names("crafter")
    real = make_env("crafter")
    obs, info = real.reset(seed=seed)
    frames, positions = [obs], [tuple(int(v) for v in info["player_pos"])]
    for key in keys:
        obs, _, _, _, info = real.step(names.index(key))
        frames.append(obs)
        positions.append(tuple(int(v) for v in info["player_pos"]))
    real.close()
    return frames, simulator_walk(seed, keys, donor_seed, donor_centre), positions[:-1]


def first_view_codes(seed: int, reach: tuple[int, int]) -> np.ndarray:
    """The material codes of ``seed``'s first view, (2 * reach[0] + 1, 2 * reach[1] + 1), the player at the centre."""
    from model.data.envs.crafter_env import CrafterEnv

    env = CrafterEnv()
    _, info = env.reset(seed=seed)
    (x0, y0), (hx, hy) = (int(v) for v in info["player_pos"]), reach
    codes = material_codes(env._env._world)[x0 - hx:x0 + hx + 1, y0 - hy:y0 + hy + 1]
    env.close()
    return codes


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--walks", type=int, default=64, help="held-out walks, seeds from --seed (the keys part's walks)")
    p.add_argument("--seed", type=int, default=10_000, help="the first walk's seed (deltaplay eval's default)")
    p.add_argument("--keys", type=int, default=30, help="move keys per walk")
    p.add_argument("--donor-offset", type=int, default=DONOR_OFFSET,
                   help="the world outside the first view is seed + this")
    p.add_argument("--match-bank", type=int, default=0, metavar="N",
                   help="take each walk's donor from N worlds (seeds from --bank-seed): the place whose tiles best "
                        "match the first view (0: the donor is seed + --donor-offset, unshifted)")
    p.add_argument("--bank-seed", type=int, default=900_000, help="the bank's first seed")
    p.add_argument("--radius", type=int, default=0,
                   help="bank places within this many tiles of each world's spawn, shifted under the player "
                        "(0: the spawn)")
    p.add_argument("--json", type=Path, help="write the result here")


def run(args: argparse.Namespace) -> int:
    from model.eval.keys import agreement, first_view_steps, geometry_for, score_split, walk_keys

    view = geometry_for("crafter")
    bank = donor_bank(args.match_bank, args.bank_seed) if args.match_bank else None
    every, first, unseen, matched = [], [], [], []
    for seed in range(args.seed, args.seed + args.walks):
        keys = walk_keys(seed, args.keys)
        donor, centre = seed + args.donor_offset, None
        if bank is not None:
            codes = first_view_codes(seed, view.reach)
            i, cx, cy, agree = best_match(codes, bank, args.radius, np.random.default_rng(seed))
            donor, centre = args.bank_seed + i, (cx, cy)
            matched.append(agree / (codes.size - 1))
        real, glued, positions = walk_pair(seed, donor, keys, centre)
        inside, rest, _ = score_split(real, glued, keys, view, first_view_steps(positions, keys, view))
        every += inside + rest
        first += inside
        unseen += rest
    out: dict[str, Any] = {"walks": args.walks, "seed": args.seed, "keys": args.keys,
                           "donor_offset": args.donor_offset, "match_bank": args.match_bank,
                           "bank_seed": args.bank_seed, "radius": args.radius,
                           "matched_tiles": float(np.mean(matched)) if matched else None, "all": agreement(every),
                           "first_view": agreement(first), "unseen": agreement(unseen)}
    for part in ("all", "first_view", "unseen"):
        a = out[part]
        print(f"{part:>10}: agreement {a['agreement']:.3f} on {a['pairs']} move steps"
              + (f" (always the key's way: {a['key_baseline']:.3f})" if part == "all" else ""))
    if matched:
        print(f"first views matched by the bank: {np.mean(matched):.1%} of tiles on average, "
              f"{np.mean(np.array(matched) == 1):.0%} of walks exactly")
    if args.json:
        write_json(args.json, out)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command("python -m experiments.keys_ceiling.cli", __doc__.split("\n\n")[0], add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
