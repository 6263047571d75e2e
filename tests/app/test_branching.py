"""Branching futures and the token inspector through the play engine, on a real tiny checkpoint."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from app.branching import colorize, heat_map, token_maps
from app.engine import PlaySession


@pytest.fixture
def session(bundle):
    s = PlaySession(bundle, seed=4)
    s.reset(seed=4)
    s.start_recording()
    s.step(1)
    return s


def test_branches_leave_the_dream_and_picking_one_continues_from_its_exact_frame(session):
    before = session.info
    branches = session.branches(2, n=8)
    assert len(branches) == 8 and session.info is before  # sampling futures does not move the dream
    assert all(b.frame.shape == (64, 64, 3) and len(b.tokens) == 4 and b.logp <= 0 for b in branches)
    info = session.pick_branch(5)
    assert info.step == 2 and info.action_name == session.action_names[2]
    np.testing.assert_array_equal(info.dream_frame, branches[5].frame)
    assert info.real_frame is not None  # the real env took the same action
    assert session.inspect().tokens == branches[5].tokens
    with pytest.raises(ValueError, match="sample them first"):
        session.pick_branch(0)  # a step used the branches up


def test_near_zero_temperature_gives_identical_branches(session):
    branches = session.branches(3, n=4, temperature=1e-6)
    assert len({b.frame.tobytes() for b in branches}) == 1 and len({tuple(b.tokens) for b in branches}) == 1
    with pytest.raises(ValueError, match="between 0 and 3"):
        session.pick_branch(4)
    with pytest.raises(ValueError, match="between 1 and 64"):
        session.branches(3, n=0)


def test_inspector_edits_a_token_and_shows_where_the_frame_changed(session):
    view = session.inspect(topk=5)
    assert len(view.slots) == 4
    for slot in view.slots:
        probs = [p for _, p in slot.top]
        assert len(slot.top) == 5 and probs == sorted(probs, reverse=True) and 0 < slot.prob <= 1
    # The most different alternative of position 0 that the model also considers.
    slot = view.slots[0]
    alt = next(t for t, _ in slot.top if t != slot.token)
    before = session.info.dream_frame.copy()
    edited = session.set_token(0, alt)
    assert edited.tokens[0] == alt and edited.tokens[1:] == view.tokens[1:]
    np.testing.assert_array_equal(session.info.dream_frame, edited.frame)
    changed = np.abs(edited.frame.astype(int) - before.astype(int)).mean()
    assert edited.heat is not None and edited.heat.shape == (64, 64, 3)
    assert abs(edited.changed - changed) < 1.0  # float change vs the uint8 frames' change
    if changed > 0:
        assert edited.heat.max() > 0
    # The GIF being recorded keeps one frame per step: the edited frame replaced the step's old one.
    assert len(session.recorder) == 2
    np.testing.assert_array_equal(session.recorder.columns[-1]["dream"], edited.frame)
    resampled = session.set_token(3, None)
    assert resampled.tokens[:3] == edited.tokens[:3]
    assert session.step(1).step == 2  # the dream goes on from the edited frame
    with pytest.raises(ValueError, match="between 0 and 3"):
        session.set_token(4, 0)
    with pytest.raises(ValueError, match="token must be"):
        session.set_token(0, 10**6)


def test_inspector_before_any_step_says_why(bundle):
    s = PlaySession(bundle, seed=1)
    s.reset(seed=1)
    with pytest.raises(RuntimeError, match="no step yet"):
        s.inspect()


def test_heat_maps_and_token_maps(bundle):
    import torch

    a = torch.zeros(3, 8, 8)
    b = a.clone()
    b[:, 2, 3] = 1.0
    heat = heat_map(a, b)
    assert heat[2, 3].sum() > 600 and heat[0, 0].sum() == 0
    assert colorize(np.array([[0.0, 1.0]])).tolist() == [[[0, 0, 0], [255, 240, 160]]]
    from model.data.envs import make_env

    env = make_env("gridworld")
    prev, _ = env.reset(seed=0)
    frame = env.step(1)[0]
    maps = token_maps(bundle.tokenizer, prev, 1, frame, codes=4)
    assert maps.shape == (4, 64, 64) and (maps >= 0).all() and maps.max() > 0
    with pytest.raises(ValueError, match="previous frame"):
        token_maps(bundle.tokenizer, None, None, frame)


def test_gridworld_bundle_branches_agree_on_the_agents_move_and_differ_on_chance():
    """The bundled GridWorld world model, primed on real frames of 10 held-out random walks: its 8 futures
    put the agent where the real env does (the agent's own move is certain) and at times disagree on the coins
    and enemies (whether one appears is chance)."""
    from app.engine import ModelBundle
    from model.data.envs import make_env
    from model.eval.terrain import TileJudge

    judge = TileJudge.collect("gridworld", range(5), 30)
    torch.manual_seed(0)  # futures that disagree are rare (0-3 of 80 states over seeds 0-3): a fixed draw
    session = PlaySession(ModelBundle.load("checkpoints/gridworld", device="cpu"), shadow=False)
    cell = lambda view, *names: frozenset(map(tuple, np.argwhere(np.isin(view, names))))  # noqa: E731
    agent_right, states, objects_differ = [], 0, 0
    for seed in range(10000, 10010):
        env = make_env("gridworld")
        frames, actions = [env.reset(seed=seed)[0]], []
        rng = np.random.default_rng(seed)
        for _ in range(8):
            a = int(rng.integers(1, 5))
            session.reset_from_frames(frames[-4:], actions[len(actions) - len(frames[-4:]) + 1:])
            views = [judge.classify(b.frame) for b in session.branches(a, n=8)]
            frame, _, terminated, truncated, _ = env.step(a)
            real = cell(judge.classify(frame), "agent")
            agent_right += [cell(v, "agent") == real for v in views]
            objects_differ += len({cell(v, "coin", "enemy") for v in views}) > 1
            states += 1
            frames.append(frame)
            actions.append(a)
            if terminated or truncated:
                break
        env.close()
    assert np.mean(agent_right) >= 0.7, f"futures put the agent where the real env does in {np.mean(agent_right):.0%}"
    assert objects_differ >= 1, f"no state of {states} had futures that disagree on coins or enemies"
