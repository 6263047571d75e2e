"""Environments: gymnasium compliance, seeded reproducibility, keymaps."""
import warnings

import crafter
import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from model.data.envs import (achievement_names, action_names, canonical_name, keymap_for, make_env,
                        num_actions)
from model.data.envs.gridworld import ENEMY, GridWorldEnv


SMALL = {"area": (32, 32)}  # a smaller Crafter world: 5x faster reset, same seeding and rules


def rollout(env, seed, actions):
    obs, _ = env.reset(seed=seed)
    frames, rewards, ends = [obs], [], []
    for a in actions:
        obs, r, term, trunc, _ = env.step(a)
        frames.append(obs)
        rewards.append(r)
        ends.append((term, trunc))
        if term or trunc:
            break
    return np.stack(frames), rewards, ends


def test_crafter_passes_check_env():
    env = make_env("crafter")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # check_env reports problems as warnings: make them fail
        check_env(env, skip_render_check=True)
    assert env.observation_space.shape == (64, 64, 3) and env.observation_space.dtype == np.uint8
    assert env.action_space.n == 17 == num_actions("crafter")
    assert action_names("crafter") == list(crafter.constants.actions)


def test_crafter_worlds_are_the_ones_crafters_own_python_code_makes():
    """Crafter's world generation runs compiled when numba is installed (opensimplex's noise); the worlds must be
    the ones the plain Python noise makes: the whole material map and first frame of three seeds, hashed with
    numba absent (crafter 1.8.3, opensimplex 0.4.5.1)."""
    import hashlib

    golden = {0: "de0af998", 10000: "71108d0e", 123456789: "c1380405"}
    for seed, digest in golden.items():
        env = make_env("crafter")
        obs, _ = env.reset(seed=seed)
        h = hashlib.sha256(env._env._world._mat_map.tobytes() + obs.tobytes()).hexdigest()
        assert h[:8] == digest, f"seed {seed}: another world ({h[:8]})"


def test_crafter_seeded_reset_is_reproducible():
    rng = np.random.default_rng(0)
    actions = rng.integers(0, 17, size=400)
    env = make_env("crafter", **SMALL)
    f1, r1, _ = rollout(env, 3, actions)
    junk = [object() for _ in range(5000)]  # shifts memory addresses (Crafter once ordered by them)
    f2, r2, _ = rollout(env, 3, actions)  # same env object, rebuilt by the seed
    f3, _, _ = rollout(make_env("crafter", **SMALL), 4, actions)
    assert len(f1) > 100 and len(junk) == 5000
    assert np.array_equal(f1, f2) and r1 == r2
    assert not np.array_equal(f1[0], f3[0])
    # an unseeded reset after a seeded one continues a reproducible sequence of worlds
    e1, e2 = make_env("crafter", seed=5, **SMALL), make_env("crafter", seed=5, **SMALL)
    o1, _ = e1.reset()
    o2, _ = e2.reset()
    assert np.array_equal(o1, o2)


def test_crafter_info_and_death_is_terminal():
    env = make_env("crafter", **SMALL)
    obs, info = env.reset(seed=0)
    assert set(info["achievements"]) == set(achievement_names("crafter"))
    _, _, _, _, info = env.step(0)
    pos = info["player_pos"]
    _, _, _, _, info2 = env.step(1)
    assert pos is not info2["player_pos"]  # copied, not Crafter's live array
    # noop until starvation/zombies kill the player: death must be `terminated`, never `truncated`
    env = make_env("crafter", length=10000, **SMALL)
    env.reset(seed=1)
    for _ in range(10000):
        _, _, term, trunc, info = env.step(0)
        if term or trunc:
            break
    assert term and not trunc and info["discount"] == 0.0


def test_crafter_length_limit_is_truncation():
    env = make_env("crafter", length=20, **SMALL)
    env.reset(seed=2)
    ends = [env.step(0)[2:4] for _ in range(20)]
    assert ends[-1] == (False, True)
    assert all(e == (False, False) for e in ends[:-1])


def test_gridworld_passes_check_env_and_is_reproducible():
    env = make_env("gridworld")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env, skip_render_check=True)
    actions = np.random.default_rng(1).integers(0, 5, size=100)
    f1, r1, e1 = rollout(make_env("gridworld"), 7, actions)
    f2, r2, e2 = rollout(make_env("gridworld"), 7, actions)
    f3, _, _ = rollout(make_env("gridworld"), 8, actions)
    assert np.array_equal(f1, f2) and r1 == r2 and e1 == e2
    assert not np.array_equal(f1, f3[: len(f1)]) if len(f3) >= len(f1) else True
    assert f1.dtype == np.uint8 and f1.shape[1:] == (64, 64, 3)


def test_gridworld_rules():
    env = GridWorldEnv()
    env.reset(seed=0)
    # deterministic motion: walls stop the agent
    for _ in range(10):
        env.step(3)  # left
    assert env.agent[1] == 0
    env.grid[:] = 0
    env.grid[env.agent[0], 1] = ENEMY
    env.enemy_vanish_prob = 0.0
    _, r, term, trunc, _ = env.step(4)  # right, into the enemy
    assert (r, term, trunc) == (-1.0, True, False)
    # a coin pays +1; the episode is truncated after max_steps
    env = GridWorldEnv(max_steps=100, enemy_prob=0.0)
    env.reset(seed=0)
    total, n = 0.0, 0
    while True:
        _, r, term, trunc, _ = env.step(int(env.np_random.integers(5)))
        total, n = total + r, n + 1
        if term or trunc:
            break
    assert trunc and not term and n == 100 and total >= 0


def test_gym_registry_ids():
    env = gym.make("deltaplay/GridWorld-v0")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (64, 64, 3)
    env = gym.make("deltaplay/Crafter-v0", length=5, **SMALL)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (64, 64, 3)


def test_keymaps():
    km = keymap_for("crafter")
    names = action_names("crafter")
    expected = {"w": "move_up", "a": "move_left", "s": "move_down", "d": "move_right", "space": "do",
                "tab": "sleep", "r": "place_stone", "t": "place_table", "f": "place_furnace",
                "p": "place_plant", "1": "make_wood_pickaxe", "6": "make_iron_sword"}
    for key, name in expected.items():
        assert names[km[key]] == name
    assert 0 not in km.values()  # noop = no key
    assert set(km.values()) == set(range(1, 17))  # every non-noop action reachable
    g = keymap_for("gridworld")
    assert [action_names("gridworld")[g[k]] for k in "wasd"] == ["up", "left", "down", "right"]
    assert canonical_name("Crafter") == "crafter"
    with pytest.raises(ValueError):
        make_env("pacman")


def test_atari():
    pytest.importorskip("ale_py", reason="optional Atari support: pip install '.[atari]'")
    env = make_env("atari:Pong", seed=0)
    obs, info = env.reset(seed=0)
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8
    obs, r, term, trunc, info = env.step(0)
    assert "life_loss" in info
    assert keymap_for("atari:Pong")["space"] == action_names("atari:Pong").index("fire")
