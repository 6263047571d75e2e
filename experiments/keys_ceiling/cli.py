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

A lower bound of what a perfect world model scores: the donor's terrain ignores the first view, where the game's
own would continue a lake or a forest across its edge.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from experiments.command import run_command


def glued_env(seed: int, donor_seed: int):
    """A reset Crafter env (:class:`model.data.envs.crafter_env.CrafterEnv`) whose world is ``seed``'s within the
    player's first view and ``donor_seed``'s everywhere else; returns (env, its first frame)."""
    import crafter.objects as objects

    from model.data.envs.crafter_env import CrafterEnv
    from model.eval.keys import geometry_for

    half_x, half_y = geometry_for("crafter").reach
    env, donor = CrafterEnv(), CrafterEnv()
    first, info = env.reset(seed=seed)
    donor.reset(seed=donor_seed)
    world, other, player = env._env._world, donor._env._world, env._env._player
    x0, y0 = (int(v) for v in info["player_pos"])

    def inside(pos) -> bool:
        return abs(int(pos[0]) - x0) <= half_x and abs(int(pos[1]) - y0) <= half_y

    for obj in list(world.objects):
        if obj is not player and not inside(obj.pos):
            world.remove(obj)
    for x in range(world.area[0]):
        for y in range(world.area[1]):
            if not inside((x, y)):
                world[(x, y)] = other[(x, y)][0]
    makers = {objects.Cow: lambda p: objects.Cow(world, p), objects.Plant: lambda p: objects.Plant(world, p),
              objects.Zombie: lambda p: objects.Zombie(world, p, player),
              objects.Skeleton: lambda p: objects.Skeleton(world, p, player)}
    for obj in list(other.objects):
        make = makers.get(type(obj))
        if make is not None and not inside(obj.pos) and world[obj.pos][1] is None:
            world.add(make(np.array(obj.pos)))
    donor.close()
    if not np.array_equal(env._env.render(), first):
        raise AssertionError("gluing changed the first view")
    return env, first


def walk_pair(seed: int, donor_seed: int, keys: list[str]) -> tuple[list, list, list]:
    """(real frames, glued frames, the real player's positions before each step) under ``keys``."""
    from model.data.envs import action_names, make_env

    names = action_names("crafter")
    real = make_env("crafter")
    obs, info = real.reset(seed=seed)
    frames, positions = [obs], [tuple(int(v) for v in info["player_pos"])]
    glued, first = glued_env(seed, donor_seed)
    other = [first]
    for key in keys:
        obs, _, _, _, info = real.step(names.index(key))
        frames.append(obs)
        positions.append(tuple(int(v) for v in info["player_pos"]))
        other.append(glued.step(names.index(key))[0])
    real.close(), glued.close()
    return frames, other, positions[:-1]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--walks", type=int, default=64, help="held-out walks, seeds from --seed (the keys part's walks)")
    p.add_argument("--seed", type=int, default=10_000, help="the first walk's seed (deltaplay eval's default)")
    p.add_argument("--keys", type=int, default=30, help="move keys per walk")
    p.add_argument("--donor-offset", type=int, default=500_000, help="the world outside the first view is seed + this")
    p.add_argument("--json", type=Path, help="write the result here")


def run(args: argparse.Namespace) -> int:
    from model.eval.keys import agreement, first_view_steps, geometry_for, score_split, walk_keys

    view = geometry_for("crafter")
    every, first, unseen = [], [], []
    for seed in range(args.seed, args.seed + args.walks):
        keys = walk_keys(seed, args.keys)
        real, glued, positions = walk_pair(seed, seed + args.donor_offset, keys)
        inside, rest, _ = score_split(real, glued, keys, view, first_view_steps(positions, keys, view))
        every += inside + rest
        first += inside
        unseen += rest
    out: dict[str, Any] = {"walks": args.walks, "seed": args.seed, "keys": args.keys,
                           "donor_offset": args.donor_offset, "all": agreement(every),
                           "first_view": agreement(first), "unseen": agreement(unseen)}
    for part in ("all", "first_view", "unseen"):
        a = out[part]
        print(f"{part:>10}: agreement {a['agreement']:.3f} on {a['pairs']} move steps"
              + (f" (always the key's way: {a['key_baseline']:.3f})" if part == "all" else ""))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command("python -m experiments.keys_ceiling.cli", __doc__.split("\n\n")[0], add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
