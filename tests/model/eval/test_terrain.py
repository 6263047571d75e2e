"""The tile judge names real tiles as the env labels them, and calls smears and ghosts what they are."""
import numpy as np
import pytest

from model.data.envs import action_names, make_env
from model.eval.terrain import (UNKNOWN, TileJudge, clean_gridworld_frame, grid_for, shows, terrain_share)


@pytest.fixture(scope="module")
def crafter_judge():
    return TileJudge.collect("crafter", seeds=list(range(6)), steps=30)


def _walk(env_name: str, seed: int, steps: int):
    env, names = make_env(env_name), action_names(env_name)
    frame = env.reset(seed=seed)[0]
    rng = np.random.default_rng(seed)
    moves = [i for i, n in enumerate(names) if "left" in n or "right" in n or "up" in n or "down" in n]
    for _ in range(steps):
        yield frame, env.unwrapped.view_labels()
        frame, _, terminated, truncated, _ = env.step(int(rng.choice(moves)))
        if terminated or truncated:
            return


def test_held_out_crafter_frames_are_named_as_the_env_labels_them(crafter_judge):
    agree, total = 0, 0
    for seed in (900, 901):
        for frame, labels in _walk("crafter", seed, 25):
            view = crafter_judge.classify(frame)
            assert not (view == UNKNOWN).any()
            agree, total = agree + int((view == labels).sum()), total + labels.size
    assert agree / total > 0.99, agree / total


def test_a_smear_matches_no_real_tile(crafter_judge):
    frame = next(_walk("crafter", 902, 1))[0].copy()
    t = grid_for("crafter").tile
    rng = np.random.default_rng(0)
    frame[:t, :t] = rng.integers(0, 256, (t, t, 3))  # noise where the top-left tile was
    frame[t:2 * t, :t] = frame[t:2 * t, :t] // 2 + 60  # a washed-out, greyed tile
    view = crafter_judge.classify(frame)
    assert view[0, 0] == UNKNOWN and view[1, 0] == UNKNOWN
    assert (view[2:] != UNKNOWN).all()


def test_terrain_share_and_presence_on_hand_made_views():
    a = np.array([["grass", "tree"], ["water", "grass"]], dtype=object)
    b = np.array([["grass", "grass"], ["cow", UNKNOWN]], dtype=object)
    assert terrain_share([a, b]) == pytest.approx((0.5 + 0.0) / 2)
    assert shows([a, b], "tree") and not shows([b], "tree")


def test_gridworld_frames_are_clean_and_ghosts_are_not():
    judge = TileJudge.collect("gridworld", seeds=list(range(4)), steps=40)
    frames = [f for f, _ in _walk("gridworld", 77, 30)]
    assert all(clean_gridworld_frame(judge.classify(f)) for f in frames)
    ghost = frames[0].copy()
    r, c = np.argwhere(judge.classify(ghost) == "agent")[0]
    cell = grid_for("gridworld").tile
    r2, c2 = (r + 2) % 8, (c + 3) % 8
    ghost[r2 * cell:(r2 + 1) * cell, c2 * cell:(c2 + 1) * cell] = ghost[r * cell:(r + 1) * cell, c * cell:(c + 1) * cell]
    assert not clean_gridworld_frame(judge.classify(ghost))  # two agents
    hole = frames[0].copy()
    hole[:cell, :cell] = 0  # a dark hole where no object is drawn
    assert not clean_gridworld_frame(judge.classify(hole))
