"""The game's own simulator as a yardstick for a dream: the real world inside the player's first view, another
world's terrain and creatures outside it. A world model sees the first view and nothing else of the real world, so
every tile that scrolls in later it must draw itself; the best it can do is draw it as the game would. Walked with
the same keys, this glued world shows about what the keys metric can reach for a model that cannot see the real
world's hidden terrain; drawing that terrain to fit the first view does not score higher
(``experiments/keys_ceiling``). `deltaplay eval checkpoint --parts keys` prints it as the ``simulator`` row.
Crafter only.
"""
from __future__ import annotations

import numpy as np

# The other world is this many seeds away (any offset that keeps it away from the held-out seeds will do).
DONOR_OFFSET = 500_000


def glued_env(seed: int, donor_seed: int, donor_centre: tuple[int, int] | None = None):
    """A reset Crafter env (:class:`model.data.envs.crafter_env.CrafterEnv`) whose world is ``seed``'s within the
    player's first view and ``donor_seed``'s everywhere else; returns (env, its first frame). ``donor_centre``: the
    donor tile that lands under the player (default: the same coordinates, no shift); tiles shifted in from beyond
    the donor's edge repeat its edge."""
    import crafter.objects as objects

    from model.data.envs.crafter_env import CrafterEnv
    from model.eval.keys import geometry_for

    half_x, half_y = geometry_for("crafter").reach
    env, donor = CrafterEnv(), CrafterEnv()
    first, info = env.reset(seed=seed)
    donor.reset(seed=donor_seed)
    world, other, player = env._env._world, donor._env._world, env._env._player
    x0, y0 = (int(v) for v in info["player_pos"])
    dx, dy = (0, 0) if donor_centre is None else (donor_centre[0] - x0, donor_centre[1] - y0)
    w, h = world.area

    def donor_at(x: int, y: int):
        return min(max(x + dx, 0), w - 1), min(max(y + dy, 0), h - 1)

    def inside(pos) -> bool:
        return abs(int(pos[0]) - x0) <= half_x and abs(int(pos[1]) - y0) <= half_y

    for obj in list(world.objects):
        if obj is not player and not inside(obj.pos):
            world.remove(obj)
    for x in range(world.area[0]):
        for y in range(world.area[1]):
            if not inside((x, y)):
                world[(x, y)] = other[donor_at(x, y)][0]
    makers = {objects.Cow: lambda p: objects.Cow(world, p), objects.Plant: lambda p: objects.Plant(world, p),
              objects.Zombie: lambda p: objects.Zombie(world, p, player),
              objects.Skeleton: lambda p: objects.Skeleton(world, p, player)}
    for obj in list(other.objects):
        make = makers.get(type(obj))
        pos = (int(obj.pos[0]) - dx, int(obj.pos[1]) - dy)
        if make is not None and 0 <= pos[0] < w and 0 <= pos[1] < h and not inside(pos) and world[pos][1] is None:
            world.add(make(np.array(pos)))
    donor.close()
    if not np.array_equal(env._env.render(), first):
        raise AssertionError("gluing changed the first view")
    return env, first


def simulator_walk(seed: int, keys: list[str], donor_seed: int | None = None,
                   donor_centre: tuple[int, int] | None = None) -> list[np.ndarray]:
    """The frames of the glued world of ``seed`` (:func:`glued_env`; the terrain outside the first view from
    ``donor_seed``, default ``seed + DONOR_OFFSET``) walked with ``keys``, its first frame the real one."""
    from model.data.envs import action_names

    names = action_names("crafter")
    env, first = glued_env(seed, seed + DONOR_OFFSET if donor_seed is None else donor_seed, donor_centre)
    try:
        return [first] + [env.step(names.index(key))[0] for key in keys]
    finally:
        env.close()
