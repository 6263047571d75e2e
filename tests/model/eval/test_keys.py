"""The view-motion check behind `deltaplay eval checkpoint --parts keys`, on real Crafter frames."""
import json

import numpy as np
import pytest

from app.cli import main
from model.data.envs import action_names, make_env
from model.eval.keys import (KEY_MOTION, MOTIONS, agreement, classify, closed_loop, first_view_steps, geometry_for,
                             motion_errors, random_loop, score_walk, walk_keys)

VIEW = geometry_for("crafter")


def _real_walk(seed: int, keys: list[str]) -> list[np.ndarray]:
    env, names = make_env("crafter"), action_names("crafter")
    frames = [env.reset(seed=seed)[0]]
    frames += [env.step(names.index(k))[0] for k in keys]
    env.close()
    return frames


def test_real_crafter_moves_are_classified_as_the_key_says_or_as_blocked():
    keys = ["move_right"] * 4 + ["move_down"] * 4 + ["move_left"] * 4 + ["move_up"] * 4
    frames = _real_walk(3, keys)
    seen = []
    for key, a, b in zip(keys, frames, frames[1:]):
        m = classify(motion_errors(a, b, VIEW))
        if m is not None:
            assert MOTIONS[m] in (KEY_MOTION[key], "none")  # a move key scrolls its way or not at all
            seen.append(MOTIONS[m])
    assert len(set(seen) - {"none"}) >= 2  # the walk scrolled in at least two directions


def test_synthetic_shifts_and_ambiguity():
    frame = _real_walk(3, [])[0]
    t = VIEW.tile
    moved = {"left": np.roll(frame, -t, axis=1), "right": np.roll(frame, t, axis=1),
             "up": np.roll(frame, -t, axis=0), "down": np.roll(frame, t, axis=0), "none": frame}
    for name, b in moved.items():
        if name != "none":
            b = b.copy()
            b[VIEW.height:] = frame[VIEW.height:]  # the inventory does not scroll
        assert classify(motion_errors(frame, b, VIEW)) == MOTIONS.index(name), name
    grass = np.tile(frame[:7, :7], (10, 10, 1))[:64, :64]  # one tile repeated: any scroll looks the same
    assert classify(motion_errors(grass, grass.copy(), VIEW)) is None  # scrolled one tile = unchanged
    with pytest.raises(ValueError, match="scrolling view"):
        geometry_for("gridworld")


def test_agreement_and_baselines():
    L, R, N = MOTIONS.index("left"), MOTIONS.index("right"), MOTIONS.index("none")
    r = agreement([(L, L, L), (N, L, L), (R, N, R), (N, N, L)])
    assert r["pairs"] == 4 and r["agreement"] == 0.5
    assert r["still_baseline"] == 0.5 and r["key_baseline"] == 0.5
    assert r["per_motion"]["left"] == {"pairs": 1, "same": 1.0, "dream_still": 0.0}
    assert r["per_motion"]["none"]["same"] == 0.5


def test_walk_keys_are_straight_runs():
    keys = walk_keys(7, 40)
    assert len(keys) == 40 and set(keys) <= set(KEY_MOTION) and keys == walk_keys(7, 40)
    runs = [1]
    for a, b in zip(keys, keys[1:]):
        runs[-1:] = [runs[-1] + 1] if a == b else [runs[-1], 1]
    assert max(runs) >= 3


def test_eval_keys_and_terrain_parts_on_the_crafter_bundle(tmp_path, capsys):
    out = tmp_path / "keys.json"
    rc = main(["eval", "checkpoint", "--parts", "keys", "terrain", "--walks", "1", "--walk-steps", "6",
               "--threads", "1", "--json", str(out), "--quiet"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "Dream under the move keys" in text and "Dream terrain at steps 1-6" in text
    result = json.loads(out.read_text())
    terrain = result["terrain"]
    assert terrain["steps"] == [1, 6]
    walks = ("i_tokens", "no_i_tokens", "real_tokens", "best_tokens", "random_tokens", "teacher_forced", "simulator")
    for name in walks:  # the keys' walks
        v = terrain[name]
        assert v["walks"] == 1 and 0 <= v["dream_share"] <= 1 and 0 <= v["unknown_share"] <= 1
        assert set(v["presence"]) == {"tree", "water", "stone", "sand"}
    r = result["keys"]
    assert r["walks"] == 1 and r["steps"] == 6
    # real_tokens: a perfect world model's dream (the real tokens decoded in a closed loop)
    assert set(r) == {"walks", "steps", "seeds", "temperature", *walks}
    for name in walks:
        v = r[name]
        assert v["pairs"] + v["ambiguous"] == 6
        assert v["first_view"]["pairs"] + v["unseen"]["pairs"] == v["pairs"]  # the real player's positions split them
        if v["pairs"]:
            assert 0.0 <= v["agreement"] <= 1.0


def test_score_walk_of_a_perfect_a_frozen_and_a_late_dream():
    keys = ["move_right"] * 4 + ["move_down"] * 4
    real = _real_walk(3, keys)
    none = MOTIONS.index("none")
    perfect, _ = score_walk(real, real, keys, VIEW)  # the dream is the real walk: every motion agrees
    assert perfect and all(r == d for r, d, _ in perfect)
    frozen, _ = score_walk(real, [real[0]] * len(real), keys, VIEW)  # a dream that never leaves its start
    assert all(d == none for _, d, _ in frozen)
    late, _ = score_walk(real, [real[0]] + real[:-1], keys, VIEW)  # a step behind the real walk: it still moves
    assert any(d != none for _, d, _ in late)


def test_first_view_steps_follow_the_real_player_out_of_its_first_view():
    """Crafter's view is 9 tiles wide and 7 high around the player: from the start, the 5th move right leads into
    the first tile it never showed, and a blocked move (no change of position) stays where it was."""
    keys = ["move_right"] * 6 + ["move_up"] * 2
    positions = [(32, 32), (33, 32), (34, 32), (35, 32), (36, 32), (37, 32), (37, 32), (37, 31)]
    assert first_view_steps(positions, keys, VIEW) == [0, 1, 2, 3]
    assert first_view_steps([(32, 32)] * 4, ["move_up"] * 4, VIEW) == [0, 1, 2, 3]  # walled in: never leaves it
    # the real env says where the player went; scoring only some steps leaves the others out, not ambiguous
    env, names = make_env("crafter"), action_names("crafter")
    obs, info = env.reset(seed=3)
    frames, pos = [obs], [tuple(info["player_pos"])]
    for k in ["move_right"] * 6:
        obs, _, _, _, info = env.step(names.index(k))
        frames.append(obs), pos.append(tuple(info["player_pos"]))
    env.close()
    steps = first_view_steps(pos, ["move_right"] * 6, VIEW)
    assert pos[0] == (32, 32) and len(steps) in range(4, 7)
    some, ambiguous = score_walk(frames, frames, ["move_right"] * 6, VIEW, steps=steps[:1])
    assert len(some) + ambiguous == 1


def test_closed_loop_decodes_the_real_tokens_from_its_own_last_frame():
    """Step 1 is the tokenizer's reconstruction of the real pair; step 2 decodes from step 1's output."""
    import torch

    from model.checkpoint import build_model
    from model.config import tiny
    from model.data.frames import to_tensor

    cfg = tiny()
    torch.manual_seed(0)
    tok = build_model("tokenizer", cfg).eval()
    keys = ["move_right", "move_right", "move_down"]
    names = action_names("crafter")
    frames = to_tensor(np.stack(_real_walk(3, keys)))[None]
    acts = torch.tensor([[names.index(k) for k in keys]])
    out = closed_loop(tok, frames, acts)
    assert out.shape == (1, 3, 3, 64, 64) and 0 <= out.min() and out.max() <= 1
    first, tokens = tok.reconstruct(frames[:, 0], acts[:, 0], frames[:, 1])
    torch.testing.assert_close(out[:, 0], first)
    second = tok.decode(first, acts[:, 1], tok.encode(frames[:, 1], acts[:, 1], frames[:, 2]))
    torch.testing.assert_close(out[:, 1], second)
    assert not torch.equal(second, tok.reconstruct(frames[:, 1], acts[:, 1], frames[:, 2])[0])
    best = closed_loop(tok, frames, acts, from_decoded=True)  # the tokens lead from the decoded frame instead
    torch.testing.assert_close(best[:, 0], first)
    torch.testing.assert_close(best[:, 1], tok.decode(first, acts[:, 1], tok.encode(first, acts[:, 1], frames[:, 2])))


def test_random_loop_decodes_seeded_random_tokens_from_its_own_last_frame():
    import torch

    from model.checkpoint import build_model
    from model.config import tiny
    from model.data.frames import to_tensor

    torch.manual_seed(0)
    tok = build_model("tokenizer", tiny()).eval()
    keys = ["move_right", "move_down"]
    frames = to_tensor(np.stack(_real_walk(3, keys)))[None]
    acts = torch.tensor([[action_names("crafter").index(k) for k in keys]])
    out = random_loop(tok, frames[:, 0], acts, seed=1)
    assert out.shape == (1, 2, 3, 64, 64)
    assert torch.equal(out, random_loop(tok, frames[:, 0], acts, seed=1))
    g = torch.Generator().manual_seed(1)
    t0 = torch.randint(0, tok.vocab_size, (1, tok.tokens_per_frame), generator=g)
    torch.testing.assert_close(out[:, 0], tok.decode(frames[:, 0], acts[:, 0], t0))


def test_teacher_forced_walk_decodes_each_real_pair_from_the_real_previous_frame():
    from types import SimpleNamespace

    import torch

    from app.eval_walks import _token_walk
    from model.checkpoint import build_model
    from model.config import tiny
    from model.data.frames import to_tensor, to_uint8

    torch.manual_seed(0)
    tok = build_model("tokenizer", tiny()).eval()
    keys = ["move_right", "move_right", "move_down"]
    real = _real_walk(3, keys)
    bundle = SimpleNamespace(env_name="crafter", device="cpu", tokenizer=tok)
    walk = _token_walk(bundle, real, keys, "teacher_forced")
    names = action_names("crafter")
    frames = to_tensor(np.stack(real))
    third = tok.reconstruct(frames[2:3], torch.tensor([names.index(keys[2])]), frames[3:4])[0]
    assert len(walk) == 4 and np.array_equal(walk[0], real[0])
    assert np.abs(walk[3].astype(int) - to_uint8(third)[0].astype(int)).max() <= 1  # from the real frame 2
    loop = _token_walk(bundle, real, keys, "real_tokens")
    assert not np.array_equal(loop[3], walk[3])  # the closed loop decodes from its own frame 2


def test_the_simulator_walks_the_real_first_view_and_draws_the_rest_anew():
    """The game itself with the unseen terrain from another world: its first frame is the real one; glued onto
    itself it walks as the real world does; from another world, tiles that scroll in differ."""
    from model.eval.simulator import simulator_walk

    keys = ["move_right"] * 8
    real = _real_walk(10_003, keys)
    own = simulator_walk(10_003, keys, donor_seed=10_003)
    assert len(own) == 9 and all(np.array_equal(a, b) for a, b in zip(real[:4], own[:4]))
    other = simulator_walk(10_003, keys)
    assert np.array_equal(other[0], real[0]) and not np.array_equal(other[-1], real[-1])
