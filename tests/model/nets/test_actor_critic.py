"""Actor-critic: λ-returns by hand, parameter budget, a network step with explicit state, and a real imagination
update (acting in envs: tests/model/data/test_policies.py)."""
import dataclasses

import pytest
import torch

from model.nets.actor_critic import ActorCritic, lambda_returns, mask_until_first_end, normalized_advantages
from model.config import paper, tiny
from model.nets.imagination import DreamEnv
from model.nets.tokenizer import build_tokenizer
from model.nets.world_model import WorldModel

A = 5


def test_lambda_returns_by_hand():
    rewards = torch.tensor([[1.0, 0.0, 2.0], [1.0, 0.0, 2.0]])
    values = torch.tensor([[0.5, 1.0, 2.0, 4.0], [0.5, 1.0, 2.0, 4.0]])  # last = bootstrap
    ends = torch.tensor([[0, 0, 0], [0, 1, 0]])
    g = lambda_returns(rewards, values, ends, gamma=0.9, lam=0.5)
    # Row 0: G2 = 2 + .9(.5*4 + .5*4) = 5.6; G1 = 0 + .9(.5*2 + .5*5.6) = 3.42; G0 = 1 + .9(.5*1 + .5*3.42) = 2.989
    # Row 1: the episode ends at t=1, so G1 = 0 and G0 = 1 + .9(.5*1 + .5*0) = 1.45
    assert torch.allclose(g, torch.tensor([[2.989, 3.42, 5.6], [1.45, 0.0, 5.6]]), atol=1e-5)
    # λ = 0 is one-step TD, λ = 1 the discounted return bootstrapped at the end.
    td = lambda_returns(rewards[:1], values[:1], ends[:1], gamma=0.9, lam=0.0)
    assert torch.allclose(td, torch.tensor([[1 + 0.9 * 1.0, 0 + 0.9 * 2.0, 2 + 0.9 * 4.0]]))
    mc = lambda_returns(rewards[:1], values[:1], ends[:1], gamma=0.9, lam=1.0)
    assert torch.allclose(mc, torch.tensor([[1 + 0.9 * 0 + 0.81 * 2 + 0.729 * 4, 0.9 * 2 + 0.81 * 4, 2 + 0.9 * 4]]))


def test_mask_until_first_end():
    ends = torch.tensor([[0, 1, 0, 1], [0, 0, 0, 0], [1, 0, 0, 0]])
    expected = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)
    assert torch.equal(mask_until_first_end(ends), expected)


def test_paper_preset_has_the_published_size():
    ac = ActorCritic(paper().actor_critic, num_actions=17)
    trainable = sum(p.numel() for p in ac.parameters() if p.requires_grad)
    total = sum(p.numel() for p in ac.parameters())
    assert abs(trainable - 3.75e6) / 3.75e6 < 0.10, trainable
    assert total == 2 * trainable  # the frozen EMA target is a full copy


def test_network_step_threads_an_explicit_lstm_state():
    """One step: frame (B, 3, H, W) and state in, logits, critic logits and the next state out. The critic
    starts at zero; the same frame again from the returned state differs (the LSTM remembers), and from a
    zero state repeats the first step; rows are independent (a finished row restarts alone)."""
    torch.manual_seed(0)
    ac = ActorCritic(tiny().actor_critic, A)
    frame = torch.rand(3, 3, 64, 64)
    zero = ac.zero_state(3)
    assert all(t.shape == (3, ac.cfg.lstm_dim) and not t.any() for t in zero)
    with torch.no_grad():
        logits, value_logits, state = ac.model(frame, zero)
        value = ac.twohot.decode(value_logits)
        assert logits.shape == (3, A) and value.shape == (3,)
        assert torch.allclose(value, torch.zeros(3), atol=1e-6)  # zero-initialised critic
        second, _, _ = ac.model(frame, state)
        assert not torch.allclose(logits, second)  # the LSTM remembers the first frame
        assert torch.equal(ac.model(frame, ac.zero_state(3))[0], logits)
        restarted = (torch.cat([zero[0][:1], state[0][1:]]), torch.cat([zero[1][:1], state[1][1:]]))
        again, _, _ = ac.model(frame, restarted)  # row 0 starts a new episode, rows 1-2 go on
    assert torch.allclose(again[0], logits[0]) and torch.allclose(again[1:], second[1:])


def test_target_is_an_ema_of_the_model():
    ac = ActorCritic(tiny().actor_critic, A)
    with torch.no_grad():
        for p in ac.model.parameters():
            p.fill_(1.0)
        for p in ac.target.parameters():
            p.fill_(0.0)
    ac.update_target()
    tau = ac.cfg.target_tau
    assert all(torch.allclose(p, torch.full_like(p, 1 - tau)) for p in ac.target.parameters())
    assert not any(p.requires_grad for p in ac.target.parameters())


@pytest.fixture(scope="module")
def dream_parts():
    torch.manual_seed(0)
    c = tiny()
    tok = build_tokenizer(c.tokenizer, A).eval()
    wm = WorldModel(c.world_model, tok.tokens_per_frame, tok.vocab_size, A).eval()
    return c, tok, wm


@pytest.mark.parametrize("short_run_options", [False, True], ids=["paper", "pool+normalized"])
def test_imagine_and_loss_trains_actor_and_critic_only(dream_parts, short_run_options):
    c, tok, wm = dream_parts
    torch.manual_seed(0)
    cfg = dataclasses.replace(c.actor_critic, cnn_pool=short_run_options, normalize_advantages=short_run_options)
    ac = ActorCritic(cfg, A)
    dream = DreamEnv(tok, wm)
    b, n = 4, c.actor_critic.burn_in + 1
    frames = torch.rand(b, n, 3, 64, 64)
    actions = torch.randint(0, A, (b, n))  # longer than needed: cut to n - 1
    opt = torch.optim.Adam(ac.parameters(), lr=3e-3)
    target_before = [p.clone() for p in ac.target.parameters()]
    history = []
    for _ in range(3):
        loss, m = ac.imagine_and_loss(dream, frames, actions)
        opt.zero_grad()
        loss.backward()
        assert ac.model.actor.weight.grad.abs().sum() > 0
        assert ac.model.critic.weight.grad.abs().sum() > 0
        assert ac.model.cnn.net.stem.weight.grad.abs().sum() > 0  # gradients reach the CNN through the LSTM
        opt.step()
        history.append(m)
    assert all(p.grad is None for p in wm.parameters()) and all(p.grad is None for p in tok.parameters())
    assert all(p.grad is None for p in ac.target.parameters())
    assert set(m) >= {"policy_loss", "value_loss", "entropy", "imagined_return", "value"}
    assert all(torch.isfinite(torch.tensor(list(h.values()))).all() for h in history)
    assert history[-1]["value_loss"] < history[0]["value_loss"]  # the critic fits the λ-returns
    assert any(not torch.equal(a, p) for a, p in zip(target_before, ac.target.parameters()))
    assert 0 < m["entropy"] <= torch.log(torch.tensor(float(A))).item() + 1e-5


def test_burn_in_read_equals_stepping_frame_by_frame():
    torch.manual_seed(0)
    ac = ActorCritic(tiny().actor_critic, num_actions=5).eval()
    frames = torch.rand(3, 4, 3, 64, 64)
    zeros = ac.zero_state(3)
    with torch.no_grad():
        h, c = ac.model.read(frames, zeros)
        state = zeros
        for t in range(4):
            _, _, state = ac.model(frames[:, t], state)
        assert ac.model.read(frames[:, :0], zeros) is zeros
    assert torch.allclose(h, state[0], atol=1e-6) and torch.allclose(c, state[1], atol=1e-6)


def test_pooled_frame_cnn_feature_is_the_same_wherever_the_pattern_is():
    """`pool` (`actor_critic.cnn_pool`, off in every preset): the features end with each channel's max over the 8x8 map, so a
    pattern moved by one map cell (8 px, the CNN's stride) gives the same pooled part and a different
    flattened part. The actor-critic's LSTM reads it."""
    from model.nets.blocks import FrameCNN

    torch.manual_seed(0)
    net = FrameCNN(3, 8, 4, unshuffle=True, pool=True).eval()
    assert net.out_dim == 4 * 64 + 4
    x = torch.zeros(1, 3, 64, 64)
    x[:, :, 24:30, 24:30] = 1.0  # a square near the middle
    moved = torch.roll(x, shifts=(8, 8), dims=(2, 3))
    with torch.no_grad():
        a, b = net.features(x), net.features(moved)
    pooled_diff = (a[:, -4:] - b[:, -4:]).abs().max()
    # Not exactly equal: zero padding and GroupNorm see the borders (measured: 0.03 of a pooled 1.5)
    assert pooled_diff < 0.05 * a[:, -4:].abs().max()
    assert (a[:, :-4] - b[:, :-4]).abs().max() > 20 * pooled_diff  # measured 2.0: the map itself moved
    cfg = dataclasses.replace(tiny().actor_critic, cnn_pool=True)
    ac = ActorCritic(cfg, num_actions=5)
    assert ac.model.lstm.input_size == cfg.cnn_latent * (64 + 1)
    with torch.no_grad():
        logits, _, _ = ac.model(x, ac.zero_state(1))
    assert logits.shape == (1, 5)


def test_normalized_advantages_are_centred_per_step_and_unit_scale_over_live_steps():
    """`normalize_advantages`: with a critic still at 0 every advantage is a positive return; centred per
    imagined step over the batch, half of them become negative, and steps after an end do not count."""
    adv = torch.tensor([[3.0, 2.0, 1.0], [5.0, 2.0, 9.0], [4.0, 5.0, 7.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    out = normalized_advantages(adv, mask)
    live = mask.bool()
    assert torch.allclose((out * mask).sum(0), torch.zeros(3), atol=1e-6)  # per step: mean 0 over live rows
    assert torch.allclose((out[live] ** 2).mean(), torch.tensor(1.0), atol=1e-5)
    assert out[0, 0] < 0 < out[1, 0]  # 3 is below that step's mean of 4, 5 above
    assert torch.allclose(out[0, 2], torch.tensor(0.0), atol=1e-6)  # the only live row of step 3: its own mean


def test_soft_argmax_finds_a_peak_and_keypoint_features_follow_a_moved_pattern():
    """`keypoints` (`actor_critic.cnn_keypoints`): each channel's soft-argmax (row, col) in [-1, 1]. A sharp peak
    lands on its cell's coordinate; a pattern moved by whole map cells moves the keypoints the same way."""
    from model.nets.blocks import FrameCNN, soft_argmax

    m = torch.zeros(2, 3, 8, 8)
    m[0, 0, 1, 6] = m[1, 2, 7, 0] = 50.0  # peaks; the other channels are flat (centre 0, 0)
    rows, cols = soft_argmax(m)
    grid = torch.linspace(-1, 1, 8)
    assert torch.allclose(rows[0, 0], grid[1], atol=1e-4) and torch.allclose(cols[0, 0], grid[6], atol=1e-4)
    assert torch.allclose(rows[1, 2], grid[7], atol=1e-4) and torch.allclose(cols[1, 2], grid[0], atol=1e-4)
    assert rows[0, 1].abs() < 1e-6 and cols[1, 0].abs() < 1e-6

    torch.manual_seed(0)
    net = FrameCNN(3, 8, 4, unshuffle=True, pool=True, keypoints=True).eval()
    assert net.out_dim == 4 * (64 + 1 + 2)
    x = torch.zeros(1, 3, 64, 64)
    x[:, :, 8:14, 8:14] = 1.0
    moved = torch.roll(x, shifts=(0, 32), dims=(2, 3))  # four cells to the right
    with torch.no_grad():
        a, b = net.features(x)[0, -8:], net.features(moved)[0, -8:]
    assert (a[:4] - b[:4]).abs().max() < 0.1  # rows: about unchanged (measured 0.04, GroupNorm sees the move)
    assert (b[4:] - a[4:]).max() > 0.15  # columns: some channel's keypoint moved right (measured 0.27)
    cfg = dataclasses.replace(tiny().actor_critic, cnn_pool=True, cnn_keypoints=True)
    assert ActorCritic(cfg, num_actions=5).model.lstm.input_size == cfg.cnn_latent * (64 + 1 + 2)


def test_lookahead_gradient_is_the_all_action_policy_gradient():
    """d/d logits of -E_pi[Q] is -pi(a) (Q(a) - E_pi Q) / N, with Q = r + γ (1 - p_end) V(s): every action's
    probability moves by how much better than average it scores, the sampled one or not."""
    cfg = dataclasses.replace(tiny().actor_critic, gamma=0.5, lookahead_temperature=0.0)
    ac = ActorCritic(cfg, A)
    logits = torch.randn(2, 3, A, requires_grad=True)
    values = torch.tensor([[0.4, 0.0, 1.0], [2.0, -1.0, 0.5]])
    outcomes = [(torch.randn(2, A), torch.rand(2, A)) for _ in range(3)]
    mask = torch.ones(2, 3)
    loss, stats = ac._lookahead_loss(logits, values, outcomes, lambda x: (x * mask).sum() / mask.sum())
    assert 0 < stats["lookahead_best_prob"] < 1
    loss.backward()
    r = torch.stack([o[0] for o in outcomes], 1)
    q = r + 0.5 * (1 - torch.stack([o[1] for o in outcomes], 1)) * values.unsqueeze(-1)
    pi = logits.detach().softmax(-1)
    expected = -pi * (q - (pi * q).sum(-1, keepdim=True)) / 6
    assert torch.allclose(logits.grad, expected, atol=1e-6)
    # With a temperature T the term's optimum is softmax(Q / T): the gradient vanishes at logits = Q / T.
    ac.cfg.lookahead_temperature = 0.05
    at_optimum = (q / 0.05).requires_grad_(True)
    ac._lookahead_loss(at_optimum, values, outcomes, lambda x: (x * mask).sum() / mask.sum())[0].backward()
    assert at_optimum.grad.abs().max() < 1e-6
