"""The one key -> action table per environment, shared by every front end (pygame, web JS, CLI).

Key names are lower-case and front-end neutral: letters ("w"), digits ("1"), and "space", "tab",
"enter", "up", "down", "left", "right". Pressing no key means action 0 (noop) in every env here.
Front ends translate their own key codes to these names; they never keep a table of their own.
"""
from __future__ import annotations

# Crafter: the same keys as `python -m crafter.run_gui`, plus arrow keys for movement.
CRAFTER_ACTIONS = [
    "noop", "move_left", "move_right", "move_up", "move_down", "do", "sleep",
    "place_stone", "place_table", "place_furnace", "place_plant",
    "make_wood_pickaxe", "make_stone_pickaxe", "make_iron_pickaxe",
    "make_wood_sword", "make_stone_sword", "make_iron_sword",
]
CRAFTER_KEYS = {
    "a": 1, "d": 2, "w": 3, "s": 4,
    "left": 1, "right": 2, "up": 3, "down": 4,
    "space": 5, "tab": 6,
    "r": 7, "t": 8, "f": 9, "p": 10,
    "1": 11, "2": 12, "3": 13, "4": 14, "5": 15, "6": 16,
}

GRIDWORLD_ACTIONS = ["noop", "up", "down", "left", "right"]
GRIDWORLD_KEYS = {
    "w": 1, "s": 2, "a": 3, "d": 4,
    "up": 1, "down": 2, "left": 3, "right": 4,
}

# Atari: keys map to ALE action *names*; a game only gets the keys whose action it has
# (minimal action set), resolved by `atari_keymap(action_names)`.
ATARI_KEY_TO_NAME = {
    "space": "fire",
    "w": "up", "d": "right", "a": "left", "s": "down",
    "up": "up", "right": "right", "left": "left", "down": "down",
    "t": "upright", "r": "upleft", "g": "downright", "f": "downleft",
    "i": "upfire", "l": "rightfire", "j": "leftfire", "k": "downfire",
    "o": "uprightfire", "u": "upleftfire", "m": "downrightfire", "n": "downleftfire",
}


def atari_keymap(action_names: list[str]) -> dict[str, int]:
    """Keys for the actions this game has (names as returned by `get_action_meanings`, any case)."""
    index = {name.lower(): i for i, name in enumerate(action_names)}
    return {key: index[name] for key, name in ATARI_KEY_TO_NAME.items() if name in index}
