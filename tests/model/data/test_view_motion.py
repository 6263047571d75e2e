"""The motion labels the world model's motion input learns from, against where the real Crafter player went."""
import numpy as np
import torch

from model.data.envs import action_names, make_env
from model.data.view_motion import MOTIONS, geometry_for, key_motions, motion_labels

# The view's content moves against the player: a step to +x (right) scrolls the world left.
STEP_MOTION = {(1, 0): "left", (-1, 0): "right", (0, 1): "up", (0, -1): "down"}


def test_labels_read_off_frame_pairs_match_where_the_player_went():
    names = action_names("crafter")
    moves = torch.tensor(key_motions(names))
    view = geometry_for("crafter")
    rng = np.random.default_rng(0)
    hits = {"move": [], "other": []}
    for seed in range(6):
        env = make_env("crafter")
        obs, _ = env.reset(seed=500 + seed)
        player = env.unwrapped._env._player
        for _ in range(50):
            a = int(rng.choice([1, 2, 3, 4])) if rng.random() < 0.7 else int(rng.integers(len(names)))
            before = tuple(player.pos)
            nxt, _, term, trunc, _ = env.step(a)
            d = (player.pos[0] - before[0], player.pos[1] - before[1])
            truth = MOTIONS.index(STEP_MOTION[d]) if d in STEP_MOTION else 0
            pair = [torch.from_numpy(x).permute(2, 0, 1)[None].float() / 255 for x in (obs, nxt)]
            label = int(motion_labels(*pair, torch.tensor([a]), moves, view)[0])
            hits["move" if names[a].startswith("move_") else "other"].append(label == truth)
            obs = nxt
            if term or trunc:
                break
        env.close()
    assert len(hits["move"]) > 150 and len(hits["other"]) > 30
    assert np.mean(hits["move"]) > 0.93, np.mean(hits["move"])  # walls and free moves told apart
    assert np.mean(hits["other"]) > 0.93, np.mean(hits["other"])


def test_key_motions_name_each_move_keys_scroll():
    names = action_names("crafter")
    km = key_motions(names)
    assert MOTIONS[km[names.index("move_right")]] == "left" and MOTIONS[km[names.index("noop")]] == "none"
