"""Environment factory and per-env facts (actions, keys, achievements) in one place.

Names: ``"crafter"``, ``"gridworld"``, ``"atari:<Game>"`` (e.g. ``"atari:Pong"``, needs ale-py).
Every env is a ``gymnasium.Env`` with uint8 (64, 64, 3) observations and a Discrete action space;
gymnasium ids ``deltaplay/Crafter-v0`` and ``deltaplay/GridWorld-v0`` are registered on import.
"""
from __future__ import annotations

import functools

import gymnasium as gym

from . import keymaps
from .gridworld import GridWorldEnv

__all__ = ["make_env", "env_kwargs", "action_names", "keymap_for", "num_actions", "achievement_names",
           "canonical_name"]


def canonical_name(name: str) -> str:
    """Lower-case env family, keep the Atari game's spelling: "Crafter" -> "crafter"."""
    if name.lower().startswith("atari:"):
        game = name.split(":", 1)[1]
        if not game:
            raise ValueError("atari needs a game name, e.g. 'atari:Pong'")
        return f"atari:{game}"
    low = name.lower()
    if low not in ("crafter", "gridworld"):
        raise ValueError(f"unknown env {name!r}; choose 'crafter', 'gridworld' or 'atari:<Game>'")
    return low


def make_env(name: str, seed: int | None = None, **kw) -> gym.Env:
    """Build the env; with ``seed`` it is reset once with that seed, so the next ``reset()`` (no seed)
    continues a reproducible sequence. ``kw`` goes to the env's constructor."""
    name = canonical_name(name)
    if name == "crafter":
        from .crafter_env import CrafterEnv  # imports crafter only when needed

        env: gym.Env = CrafterEnv(**kw)
    elif name == "gridworld":
        env = GridWorldEnv(**kw)
    else:
        from .atari import AtariEnv

        env = AtariEnv(name.split(":", 1)[1], **kw)
    if seed is not None:
        env.reset(seed=seed)
    return env


def env_kwargs(name: str, max_episode_steps: int | None) -> dict[str, int]:
    """The constructor arguments that give the env the config's episode length (only Crafter takes one)."""
    if canonical_name(name) == "crafter" and max_episode_steps:
        return {"length": int(max_episode_steps)}
    return {}


@functools.lru_cache(maxsize=None)
def _atari_names(game: str) -> tuple[str, ...]:
    from .atari import atari_action_names

    return tuple(atari_action_names(game))


def action_names(name: str) -> list[str]:
    name = canonical_name(name)
    if name == "crafter":
        return list(keymaps.CRAFTER_ACTIONS)
    if name == "gridworld":
        return list(keymaps.GRIDWORLD_ACTIONS)
    return list(_atari_names(name.split(":", 1)[1]))


def num_actions(name: str) -> int:
    return len(action_names(name))


def keymap_for(name: str) -> dict[str, int]:
    """Key name -> action index (see model/data/envs/keymaps.py); no key pressed = action 0 (noop)."""
    name = canonical_name(name)
    if name == "crafter":
        return dict(keymaps.CRAFTER_KEYS)
    if name == "gridworld":
        return dict(keymaps.GRIDWORLD_KEYS)
    return keymaps.atari_keymap(action_names(name))


def move_actions(name: str) -> list[int]:
    """The actions the arrow keys play: the moves of a player who walks."""
    keys = keymap_for(name)
    return sorted({keys[k] for k in ("up", "down", "left", "right") if k in keys})


def achievement_names(name: str) -> list[str]:
    """Crafter's 22 achievements; empty for envs without achievements."""
    if canonical_name(name) == "crafter":
        import crafter

        return list(crafter.constants.achievements)
    return []


def _register() -> None:
    for env_id, entry in (("deltaplay/Crafter-v0", "model.data.envs.crafter_env:CrafterEnv"),
                          ("deltaplay/GridWorld-v0", "model.data.envs.gridworld:GridWorldEnv")):
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry)


_register()
