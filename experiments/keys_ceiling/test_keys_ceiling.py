"""The keys metric's ceiling study, on real Crafter worlds."""
import json

import numpy as np

from experiments.keys_ceiling.cli import glued_env, main, walk_pair


def test_a_glued_world_keeps_the_first_view_and_changes_the_rest():
    env, first = glued_env(10_000, 510_000)
    world = env._env._world
    assert world[(32, 32)][1] is env._env._player  # the player stays where it was
    real = glued_env(10_000, 10_000)[0]._env._world  # its own world glued onto itself: nothing changes
    ours = np.array([[world[(x, y)][0] for y in range(64)] for x in range(64)])
    same = np.array([[real[(x, y)][0] for y in range(64)] for x in range(64)])
    assert (ours[28:37, 29:36] == same[28:37, 29:36]).all()  # the first view's 9 x 7 tiles
    assert (ours != same).mean() > 0.2  # another seed's terrain outside it


def test_walks_beside_the_real_world(tmp_path, capsys):
    keys = ["move_right"] * 8
    real, own, positions = walk_pair(10_003, 10_003, keys)
    assert len(real) == len(own) == 9 and len(positions) == 8 and positions[0] == (32, 32)
    assert all(np.array_equal(a, b) for a, b in zip(real[:3], own[:3]))  # the same world walks the same way
    out = tmp_path / "ceiling.json"
    assert main(["--walks", "2", "--keys", "12", "--json", str(out)]) == 0
    assert "first_view: agreement" in capsys.readouterr().out
    r = json.loads(out.read_text())
    assert r["all"]["pairs"] == r["first_view"]["pairs"] + r["unseen"]["pairs"] > 0
