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


def test_the_new_strip_is_the_tile_wide_edge_the_content_moved_away_from():
    from model.data.view_motion import new_strip

    view = geometry_for("crafter")
    m = new_strip(torch.tensor([MOTIONS.index(n) for n in MOTIONS]), view, 64)[:, 0]
    assert not m[0].any()  # none
    assert m[1, :49, 56:63].all() and m[1].sum() == 49 * 7  # content moved left: new tiles on the right
    assert m[2, :49, :7].all() and m[3, 42:49, :63].all() and m[4, :7, :63].all()
    assert not m[:, 49:].any()  # the inventory never scrolls


def test_pixel_weights_scale_the_tokenizer_loss_where_they_are_set():
    from model.checkpoint import build_model
    from model.config import get_preset

    torch.manual_seed(0)
    tok = build_model("tokenizer", get_preset("tiny")).eval()
    prev, nxt = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    act = torch.tensor([1, 2])
    with torch.no_grad():
        plain, _ = tok.compute_loss(prev, act, nxt)
        same, _ = tok.compute_loss(prev, act, nxt, pixel_weights=torch.ones(2, 1, 64, 64))
        heavier, _ = tok.compute_loss(prev, act, nxt, pixel_weights=torch.full((2, 1, 64, 64), 2.0))
    assert torch.allclose(plain, same) and heavier > plain
