"""The play engine on a real tiny checkpoint (GridWorld: instant resets) and real envs."""
from __future__ import annotations


import imageio.v3 as iio
import numpy as np
import pytest
import torch

from app.engine import (CheckpointMissing, ModelBundle, PlaySession, StepInfo, VariantUnavailable,
                        resolve_checkpoint_path)


def test_bundle_load_resolves_run_folder_and_is_cached(run_dir, bundle):
    assert bundle.path == (run_dir / "checkpoints" / "last").resolve()
    assert ModelBundle.load(run_dir / "checkpoints" / "last", device="cpu") is bundle
    assert bundle.env_name == "gridworld"
    assert set(bundle.world_models) == {True, False}
    assert bundle.world_models[True] is not bundle.world_models[False]
    assert bundle.actor_critic is not None
    assert bundle.store_dir == run_dir / "store"
    assert not any(p.requires_grad for p in bundle.tokenizer.parameters())


def test_missing_checkpoint_says_how_to_train(tmp_path, monkeypatch):
    with pytest.raises(CheckpointMissing, match="deltaplay train"):
        resolve_checkpoint_path(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointMissing, match="not a checkpoint folder"):
        resolve_checkpoint_path(tmp_path / "empty")
    import app.bundle

    monkeypatch.setattr(app.bundle, "BUNDLED_CHECKPOINT", tmp_path / "checkpoints" / "crafter")
    with pytest.raises(CheckpointMissing, match="bundled Crafter checkpoint"):
        ModelBundle.load(None)


def test_reset_and_step_follow_the_shadow_env(bundle):
    from model.data.envs import make_env

    s = PlaySession(bundle, shadow=True, seed=0)
    info = s.reset(seed=5)
    assert isinstance(info, StepInfo)
    assert info.step == 0 and info.action_name is None and info.return_ == 0.0
    assert info.dream_frame.dtype == np.uint8 and info.dream_frame.shape == (64, 64, 3)
    # The dream starts from the real first frame.
    np.testing.assert_array_equal(info.dream_frame, info.real_frame)
    assert info.pixel_error == 0.0

    ref = make_env("gridworld")
    obs, _ = ref.reset(seed=5)
    np.testing.assert_array_equal(obs, info.real_frame)
    total = 0.0
    for t, a in enumerate([1, 4, 2, 3, 0, 4, 4], start=1):
        info = s.step(a)
        total += info.reward
        assert info.step == t and info.action == a and info.action_name == s.action_names[a]
        obs, _, terminated, truncated, _ = ref.step(a)
        np.testing.assert_array_equal(info.real_frame, obs)  # shadow env got the same action
        expected = np.abs(info.dream_frame.astype(float) - info.real_frame.astype(float)).mean()
        assert info.pixel_error == pytest.approx(expected)
        assert 0.0 <= info.end_prob <= 1.0
        assert info.fps > 0
        if terminated or truncated:
            break
    assert info.return_ == pytest.approx(total)
    s.close()


def test_no_shadow_has_no_real_frame(bundle):
    s = PlaySession(bundle, shadow=False, seed=1)
    info = s.reset()
    assert info.real_frame is None and info.pixel_error is None
    info = s.step(2)
    assert info.real_frame is None and info.pixel_error is None


def test_i_token_switch_swaps_model_and_keeps_frame(bundle):
    s = PlaySession(bundle, shadow=False, seed=2)
    s.reset(seed=2)
    before = s.step(1)
    assert s.world_model is bundle.world_models[True]
    info = s.set_i_tokens(False)
    assert s.world_model is bundle.world_models[False] and s._dream.world_model is bundle.world_models[False]
    assert info.i_tokens is False
    np.testing.assert_array_equal(info.dream_frame, before.dream_frame)
    after = s.step(2)
    assert after.step == before.step + 1 and after.i_tokens is False
    s.set_i_tokens(True)
    assert s._dream.world_model is bundle.world_models[True]


def test_single_variant_checkpoint_raises_variant_unavailable(bundle):
    only = ModelBundle(cfg=bundle.cfg, device=bundle.device, tokenizer=bundle.tokenizer,
                       world_models={True: bundle.world_models[True]}, actor_critic=bundle.actor_critic)
    s = PlaySession(only, shadow=False, seed=0)
    assert s.available_variants == {"i_tokens": True, "no_i_tokens": False}
    s.reset()
    with pytest.raises(VariantUnavailable, match="without I-tokens.*--baselines"):
        s.set_i_tokens(False)
    assert s.i_tokens is True
    with pytest.raises(VariantUnavailable):
        PlaySession(only, i_tokens=False)


def test_horizon_flushes_and_reprimes(bundle):
    s = PlaySession(bundle, shadow=False, seed=3)
    s.reset(seed=3)
    assert s.set_horizon(3) == 3
    assert s.set_horizon(0) == 1  # clamped
    s.set_horizon(3)
    from model.data.frames import to_uint8

    seen = [s.step(1) for _ in range(6)]
    assert [i.steps_since_flush for i in seen] == [1, 2, 0, 1, 2, 0]
    assert "memory flushed" in seen[2].message and "memory flushed" not in seen[1].message
    # Right after a flush the dream holds only its own last prime_steps frames, the newest current.
    assert len(s._dream._frames) == s.prime_steps
    np.testing.assert_array_equal(to_uint8(s._dream.frame[0]), seen[-1].dream_frame)
    assert s.step(1).steps_since_flush == 1


def test_agent_controller_and_independent_sessions(bundle):
    a = PlaySession(bundle, shadow=True, seed=4)
    b = PlaySession(bundle, shadow=True, seed=4)
    a.reset(seed=4)
    b.reset(seed=4)
    a.set_controller("agent")
    assert a.controller == "agent"
    a.step()  # the agent has now seen a frame: its LSTM state is set
    # Each session keeps its own LSTM state: stepping b in between must not change a's policy input.
    state_before = tuple(t.clone() for t in a._agent.state)
    b.set_controller("agent")
    b.step()
    assert all(torch.equal(x, y) for x, y in zip(state_before, a._agent.state))
    info = a.step()
    assert 0 <= info.action < len(a.action_names) and info.controller == "agent"
    assert not all(torch.equal(x, y) for x, y in zip(state_before, a._agent.state))
    a.set_agent_view("real")
    assert a.step().controller == "agent"
    a.set_controller("human")
    assert a.step().action == 0  # a human pressing nothing: noop
    with pytest.raises(ValueError):
        a.set_controller("robot")


def test_temperature_and_shadow_switches(bundle):
    s = PlaySession(bundle, shadow=True, seed=5)
    s.reset()
    assert s.set_temperature(0.5) == 0.5 and s._dream.temperature == 0.5
    with pytest.raises(ValueError):
        s.set_temperature(0)
    s.set_shadow(False)
    assert s.step(1).real_frame is None
    s.set_shadow(True)
    assert s.reset().real_frame is not None


def test_recording_exports_side_by_side_gif(bundle, tmp_path):
    s = PlaySession(bundle, shadow=True, seed=6)
    s.reset(seed=6)
    s.start_recording()
    for a in [1, 2, 3, 4, 1]:
        s.step(a)
    assert s.stop_recording() == 6  # the frame at the start plus one per step
    s.step(1)  # not recorded
    path = s.export_gif(tmp_path / "x.gif", fps=20, scale=2, side_by_side=True)
    n, h, w, _ = iio.improps(path, index=None).shape
    assert n == 6
    assert w == 2 * 64 * 2 + 2 and h > 128
    assert iio.immeta(path, index=2)["duration"] == 50
    single = s.export_gif(tmp_path / "y.gif", fps=10, scale=1, side_by_side=False)
    assert iio.improps(single, index=None).shape[2] == 64
    s.start_recording()
    s.stop_recording()
    s.recorder.columns.clear()
    s.recorder.steps.clear()
    with pytest.raises(ValueError, match="nothing recorded"):
        s.export_gif(tmp_path / "z.gif")


def test_replay_from_stored_episode(bundle):
    from model.data.store import EpisodeStore

    store = EpisodeStore(bundle.store_dir)
    ep = store.get(store.ids()[0])
    assert ep.length >= 3
    s = PlaySession(bundle, shadow=False, seed=0)
    info = s.reset_from_episode(ep, start=1)
    assert info.controller == "replay"
    np.testing.assert_array_equal(info.real_frame, ep.frames[1])
    np.testing.assert_array_equal(info.dream_frame, ep.frames[1])
    info = s.step()
    assert info.action == int(ep.actions[1])
    np.testing.assert_array_equal(info.real_frame, ep.frames[2])
    # A human action takes over: the recording no longer applies.
    info = s.step(0)
    assert info.controller == "human" and info.real_frame is None


def test_crafter_session_reports_achievements_and_keymap():
    """Real Crafter as the shadow env (models untrained at the tiny preset: only plumbing is checked)."""
    from model.data.envs.crafter_env import ACHIEVEMENTS

    bundle = ModelBundle.from_preset("tiny", env="crafter", device="cpu")
    s = PlaySession(bundle, shadow=True, seed=0)
    assert s.keymap["w"] == s.action_names.index("move_up") and s.keymap["space"] == s.action_names.index("do")
    info = s.reset(seed=1)
    assert info.achievements == {}  # nothing unlocked yet (GridWorld has none at all: None)
    assert info.real_pos == (32, 32)  # Crafter starts its player in the middle of its 64 x 64 world
    for _ in range(3):
        info = s.step(s.keymap["space"])
    assert isinstance(info.achievements, dict) and set(info.achievements) <= set(ACHIEVEMENTS)
    assert info.real_frame.shape == (64, 64, 3) and info.pixel_error is not None
    moved = [s.step(s.keymap["d"]).real_pos for _ in range(3)]  # move_right: x grows unless a wall is in the way
    assert all(b[0] - a[0] in (0, 1) and b[1] == a[1] for a, b in zip([info.real_pos] + moved, moved))
    s.set_shadow(False)
    assert s.step(s.keymap["d"]).real_pos is None  # no shadow env: nothing to report
    s.close()
