"""The keys metric's ceiling study, on real Crafter worlds."""
import json

import numpy as np

from experiments.keys_ceiling.cli import main, walk_pair
from model.eval.simulator import glued_env


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


def test_the_bank_finds_the_place_that_matches_the_first_view():
    from experiments.keys_ceiling.cli import best_match

    rng = np.random.default_rng(0)
    bank = rng.integers(1, 6, size=(4, 64, 64)).astype(np.uint8)
    view = bank[2, 30 - 4:30 + 5, 35 - 3:35 + 4].copy()
    view[4, 3] = 0  # the player's tile is not compared
    assert best_match(view, bank, radius=5, rng=rng) == (2, 30, 35, 62)
    assert best_match(view, bank, radius=0, rng=rng)[:3] != (2, 30, 35)  # only the middle (32, 32) is allowed


def test_a_shifted_donor_lands_its_chosen_tile_under_the_player():
    from experiments.keys_ceiling.cli import material_codes

    donor = glued_env(10_005, 10_005)[0]._env._world
    env, _ = glued_env(10_000, 10_005, donor_centre=(40, 27))
    ours, theirs = material_codes(env._env._world), material_codes(donor)
    assert (ours[10:20, 40:50] == theirs[18:28, 35:45]).all()  # shifted by (40 - 32, 27 - 32) outside the view
    same = material_codes(glued_env(10_000, 10_005, donor_centre=(32, 32))[0]._env._world)
    assert (same == material_codes(glued_env(10_000, 10_005)[0]._env._world)).all()  # no shift: as before
