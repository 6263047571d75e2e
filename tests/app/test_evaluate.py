"""`deltaplay eval checkpoint` on a tiny GridWorld checkpoint trained in this test session, and the
measurement functions checked by hand (copy baseline, PSNR summary) or against the training code's
own metrics (tokenizer MSE, world-model token accuracy)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from app.cli import main
from model.checkpoint import load_checkpoint
from model.data.policies import RandomPolicy
from model.eval.parts import (copy_errors, copy_rollout_errors, error_summary, heldout_seeds, psnr_from_mse,
                              reconstruction_errors, reward_predictions, rollout_errors, rollout_windows,
                              run_episodes, segments, token_accuracy, used_seeds)
from model.data.frames import to_tensor
from model.data.store import Episode, EpisodeStore


@pytest.fixture(scope="module")
def ckpt(run_dir):
    ck = load_checkpoint(run_dir / "checkpoints" / "last", with_state=False)
    for m in ck.models.values():
        m.eval().requires_grad_(False)
    return ck


@pytest.fixture(scope="module")
def episodes(ckpt):
    """Held-out GridWorld episodes from a seeded random policy."""
    return run_episodes("gridworld", RandomPolicy(ckpt.cfg.env.num_actions, seed=5), heldout_seeds(10_000, 6))


def _pair_episode(x0: np.ndarray, x1: np.ndarray) -> Episode:
    return Episode(np.stack([x0, x1]), [1], [0.0], [False], [False])


def test_copy_baseline_on_a_hand_made_pair():
    x0 = np.zeros((64, 64, 3), np.uint8)
    x1 = x0.copy()
    x1[:8, :8, 0] = 255  # 64 values change by 1.0 out of 64*64*3
    x2 = x1.copy()
    x2[8:16, :4, :] = 51  # 96 more values, each by 0.2
    ep = Episode(np.stack([x0, x1, x2, x2]), [1, 2, 0], [0.0] * 3, [False] * 3, [False] * 3)
    mse = copy_errors([ep])
    n = 64 * 64 * 3
    np.testing.assert_allclose(mse, [64 / n, 96 * 0.2 ** 2 / n, 0.0], rtol=1e-6)
    s = error_summary(mse)
    assert s["frames"] == 3 and s["exact_frac"] == pytest.approx(1 / 3)
    assert s["psnr_worst1pct"] == pytest.approx(10 * math.log10(n / 64))  # worst 1% of 3 frames = 1 frame
    assert s["psnr_median"] == pytest.approx(10 * math.log10(n / (96 * 0.04)))
    assert s["psnr_mean"] == pytest.approx((10 * math.log10(n / 64) + 10 * math.log10(n / 3.84) + 100) / 3)
    assert copy_errors([ep], max_count=1).shape == (1,)
    # The rollout baseline (start frame held still) agrees at step 1 and goes on from there.
    roll = copy_rollout_errors([(ep, 0)], horizon=3)
    np.testing.assert_allclose(roll[0], [64 / n, mse[0] + 96 * 0.2 ** 2 / n, mse[0] + 96 * 0.2 ** 2 / n], rtol=1e-6)


def test_error_summary_worst_one_percent():
    mse = np.full(300, 0.01)
    mse[:3] = 0.1  # the worst 1% of 300 frames: 3 frames
    s = error_summary(mse)
    assert s["mse_worst1pct"] == pytest.approx(0.1) and s["psnr_worst1pct"] == pytest.approx(10.0)
    assert s["psnr_median"] == pytest.approx(20.0) and s["mse_median"] == pytest.approx(0.01)
    assert s["psnr_of_mean_mse"] == pytest.approx(10 * math.log10(1 / 0.0109))
    assert psnr_from_mse(0.0) == pytest.approx(100.0)  # capped, not infinite
    with pytest.raises(ValueError):
        error_summary(np.zeros(0))


def test_reconstruction_errors_match_the_training_metric(ckpt, episodes):
    tok = ckpt.models["tokenizer"]
    mse = reconstruction_errors(tok, episodes, batch=7, max_count=40)
    assert mse.shape == (40,) and np.isfinite(mse).all() and (mse > 0).all()
    ep = episodes[0] if episodes[0].length >= 40 else max(episodes, key=lambda e: e.length)
    n = min(ep.length, 40)
    prev, act, nxt = to_tensor(ep.frames[:n]), torch.as_tensor(ep.actions[:n]), to_tensor(ep.frames[1:n + 1])
    _, metrics = tok.compute_loss(prev, act, nxt)  # eval mode: no codebook update
    mine = reconstruction_errors(tok, [ep], batch=16, max_count=n)
    assert mine.mean() == pytest.approx(metrics["mse"], rel=1e-4)


def test_token_accuracy_matches_world_model_loss(ckpt, episodes):
    tok, wm = ckpt.models["tokenizer"], ckpt.models["world_model"]
    steps = wm.cfg.max_steps
    segs = segments(episodes, steps, 3)
    assert len(segs) == 3 and all(f.shape[0] == steps + 1 and a.shape == (steps,) for f, a in segs)
    frames = to_tensor(np.stack([f for f, _ in segs]))
    actions = torch.as_tensor(np.stack([a for _, a in segs]))
    b, t = actions.shape
    tokens = tok.encode(frames[:, :-1].flatten(0, 1), actions.flatten(), frames[:, 1:].flatten(0, 1)).view(b, t, -1)
    zeros = torch.zeros(b, t)
    _, metrics = wm.compute_loss(frames[:, :-1], actions, tokens, zeros, zeros.long())
    out = token_accuracy(tok, wm, episodes, max_segments=3, batch=2)
    assert out["segments"] == 3 and out["steps"] == steps
    assert out["accuracy"] == pytest.approx(metrics["token_acc"], abs=1e-6)
    assert 0.0 <= out["majority_accuracy"] <= 1.0 and out["cross_entropy"] > 0
    assert len(out["per_position"]) == tok.tokens_per_frame


def test_reward_predictions_cover_every_step_once(ckpt, episodes):
    tok, wm = ckpt.models["tokenizer"], ckpt.models["world_model"]
    out = reward_predictions(tok, wm, episodes, batch=3)
    rewards = np.concatenate([e.rewards for e in episodes])
    assert out["steps"] == len(rewards) == sum(e.length for e in episodes)
    assert out["positive"]["steps"] == (rewards > 0).sum() and out["negative"]["steps"] == (rewards < 0).sum()
    assert out["positive"]["steps"] + out["negative"]["steps"] + out["zero"]["steps"] == out["steps"]
    assert out["terminal"]["steps"] == sum(int(e.terminated.sum()) for e in episodes)
    # By hand on one long episode: consecutive windows of the model's context, each run on its own.
    ep = max(episodes, key=lambda e: e.length)
    assert ep.length > wm.cfg.max_steps  # so the episode is cut into several windows, the last one shorter
    pred = []
    for a in range(0, ep.length, wm.cfg.max_steps):
        b = min(a + wm.cfg.max_steps, ep.length)
        frames = to_tensor(ep.frames[a:b + 1])
        actions = torch.as_tensor(ep.actions[a:b]).long()
        tokens = tok.encode(frames[:-1], actions, frames[1:])
        with torch.no_grad():
            o = wm(frames[None, :-1], actions[None], tokens[None])
        pred.append(wm.reward_codec.decode(o.reward_logits[0]))
    pred = torch.cat(pred).numpy()
    one = reward_predictions(tok, wm, [ep], batch=2)
    assert one["steps"] == ep.length
    np.testing.assert_allclose(one["zero"]["predicted_reward"], pred[ep.rewards == 0].mean(), rtol=1e-4, atol=1e-6)
    assert one["reward_mae"] == pytest.approx(np.abs(pred - ep.rewards).mean(), rel=1e-4, abs=1e-6)


def test_rollouts_are_reproducible_and_use_the_recorded_actions(ckpt, episodes):
    tok, wm = ckpt.models["tokenizer"], ckpt.models["world_model"]
    windows = rollout_windows(episodes, context=2, horizon=5, count=4, seed=0)
    assert len(windows) == 4
    assert all(t0 >= 1 and t0 + 5 <= ep.length for ep, t0 in windows)
    a = rollout_errors(tok, wm, windows, context=2, horizon=5, seed=3, batch=3)
    b = rollout_errors(tok, wm, windows, context=2, horizon=5, seed=3, batch=3)
    c = rollout_errors(tok, wm, windows, context=2, horizon=5, seed=4, batch=3)
    assert a.shape == (4, 5) and np.isfinite(a).all() and ((a > 0) & (a <= 1)).all()
    np.testing.assert_allclose(a, b, rtol=1e-5)  # seeded sampling: the same dream twice
    assert not np.allclose(a, c)  # ... and another seed samples other tokens
    # Greedy decoding (temperature 0) does not depend on the sampling seed.
    g = rollout_errors(tok, wm, windows, context=2, horizon=3, temperature=0, seed=0)
    h = rollout_errors(tok, wm, windows, context=2, horizon=3, temperature=0, seed=1)
    np.testing.assert_allclose(g, h, rtol=1e-6)


def test_same_seeds_for_every_policy_and_heldout_seeds(run_dir, ckpt):
    store = EpisodeStore(run_dir / "store")
    trained = {ep.seed for ep in store}
    assert trained and used_seeds(run_dir / "store") == trained
    seeds = heldout_seeds(min(trained), 3, exclude=trained)
    assert seeds[0] == min(trained) + 1 and not set(seeds) & trained
    A = ckpt.cfg.env.num_actions
    r1 = run_episodes("gridworld", RandomPolicy(A, seed=1), seeds, max_steps=7)
    r2 = run_episodes("gridworld", RandomPolicy(A, seed=2), seeds, max_steps=7)
    for e1, e2, s in zip(r1, r2, seeds):
        assert e1.seed == e2.seed == s
        np.testing.assert_array_equal(e1.frames[0], e2.frames[0])  # same world, whoever plays it
        assert e1.length <= 7 and (e1.truncated[-1] or e1.terminated[-1])
        assert e1.meta["cut"] == (e1.length == 7 and not e1.terminated[-1])


def test_crafter_episodes_have_achievements_and_a_score():
    from model.eval.parts import episode_stats

    eps = run_episodes("crafter", RandomPolicy(17, seed=0), [10_000], max_steps=20)  # one world: resets are slow
    stats = episode_stats(eps)
    assert stats["episodes"] == 1 and stats["cut_by_max_steps"] == 1 and stats["length_mean"] == 20
    assert len(stats["success_rates"]) == 22 and 0.0 <= stats["crafter_score"] <= 100.0
    assert stats["returns"] == [pytest.approx(e.rewards.sum()) for e in eps]


def test_cli_eval_checkpoint_writes_every_part(run_dir, tmp_path, capsys):
    out = tmp_path / "eval.json"
    rc = main(["eval", "checkpoint", str(run_dir), "--episodes", "3", "--frames", "120", "--data-episodes", "4",
               "--data-policy", "random", "--segments", "4", "--horizon", "6", "--starts", "3",
               "--feel-steps", "3", "--walks", "2", "--device", "cpu", "--json", str(out), "--quiet"])
    assert rc == 0
    text = capsys.readouterr().out
    for heading in ("Reconstruction", "teacher-forced", "Imagined vs real", "reward and end predictions",
                    "Agent in the real env", "Feel", "Dream frames the real env could draw"):
        assert heading in text
    r = json.loads(out.read_text())
    assert r["env"] == "gridworld"
    assert r["parts"] == ["recon", "dynamics", "rewards", "agent", "feel", "keys", "terrain"]
    assert "no scrolling view" in r["keys"]["error"]  # GridWorld's board does not scroll
    for variant in ("i_tokens", "no_i_tokens"):  # the tiny run has both world models
        clean = r["terrain"][variant]
        assert clean["frames"] > 0 and 0 <= clean["clean_share"] <= 1
        assert clean["real_clean_share"] == 1.0  # the judge passes every frame the real env draws
    assert r["heldout"]["training_seeds_seen"] > 0
    trained = {ep.seed for ep in EpisodeStore(run_dir / "store")}
    assert not (set(r["data"]["seeds"]) | set(r["agent"]["seeds"])) & trained

    rec = r["recon"]
    assert set(rec) == {"delta", "iris", "copy_prev"}
    assert rec["delta"]["bits_per_frame"] == 4 * math.log2(rec["delta"]["vocab_size"])
    assert rec["iris"]["tokens_per_frame"] == 16
    for v in rec.values():
        assert v["frames"] == 120
        for k in ("psnr_mean", "psnr_median", "psnr_worst1pct", "psnr_of_mean_mse"):
            assert math.isfinite(v[k]) and 0 < v[k] <= 100
        assert v["psnr_worst1pct"] <= v["psnr_median"]
    # The copy baseline in the report is exactly that of the data it names (seeded random policy).
    data = run_episodes("gridworld", RandomPolicy(5, seed=r["seed"]), r["data"]["seeds"][:4], max_steps=30)
    assert r["data"]["transitions"] == sum(e.length for e in data) == 120  # one round was enough
    assert rec["copy_prev"]["mse_mean"] == pytest.approx(copy_errors(data, 120).mean())

    dyn = r["dynamics"]
    assert set(dyn["token_accuracy"]) == {"i_tokens", "no_i_tokens"}
    for v in dyn["token_accuracy"].values():
        assert 0.0 <= v["accuracy"] <= 1.0 and 0.0 <= v["majority_accuracy"] <= 1.0
        assert all(0.0 <= p <= 1.0 for p in v["per_position"]) and v["segments"] == 4
    ro = dyn["rollout"]
    assert ro["horizon"] == 6 and ro["starts"] == 3
    for k in ("i_tokens", "no_i_tokens", "copy_start"):
        assert len(ro[k]["psnr_per_step"]) == 6 and all(math.isfinite(p) for p in ro[k]["psnr_per_step"])

    rw = r["rewards"]
    assert set(rw) == {"i_tokens", "no_i_tokens"}
    for v in rw.values():
        assert v["steps"] == 120 and math.isfinite(v["reward_mae"])
        assert v["zero"]["steps"] + v["positive"]["steps"] + v["negative"]["steps"] == 120

    ag = r["agent"]
    assert ag["episodes"] == 3 and len(ag["seeds"]) == 3
    for k in ("agent", "random"):
        assert ag[k]["episodes"] == 3 and math.isfinite(ag[k]["return_mean"]) and len(ag[k]["returns"]) == 3
        assert ag[k]["return_mean"] == pytest.approx(np.mean(ag[k]["returns"]))
    assert r["feel"]["steps_per_s"] > 0 and r["feel"]["steps"] == 3


def test_cli_parts_and_errors(run_dir, tmp_path, capsys):
    out = tmp_path / "agent.json"
    rc = main(["eval", "checkpoint", str(run_dir), "--parts", "agent", "--episodes", "2", "--max-steps", "5",
               "--device", "cpu", "--json", str(out), "--quiet"])
    assert rc == 0
    r = json.loads(out.read_text())
    assert "recon" not in r and "dynamics" not in r and "data" not in r
    assert r["agent"]["max_steps"] == 5 and r["agent"]["agent"]["length_mean"] <= 5
    capsys.readouterr()
    assert main(["eval", "checkpoint", str(tmp_path / "nope"), "--quiet"]) == 2
    assert "no such checkpoint" in capsys.readouterr().err
