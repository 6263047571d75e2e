"""World model G: layouts, losses, parameter budget, and KV-cached generation == full forward."""
import dataclasses
import math

import pytest
import torch

from model.config import paper, tiny
from model.nets.world_model import WorldModel

A = 5


def make(layout="delta", i_tokens=True, seed=0, **over):
    torch.manual_seed(seed)
    c = tiny()
    cfg = dataclasses.replace(c.world_model, i_tokens=i_tokens, **over)
    k = 4 if layout == "delta" else 16
    return WorldModel(cfg, tokens_per_frame=k, vocab_size=c.tokenizer.vocab_size, num_actions=A, layout=layout).eval()


def batch(wm, b=2, t=None, seed=1):
    g = torch.Generator().manual_seed(seed)
    t = t or wm.cfg.max_steps
    frames = torch.rand(b, t, 3, 64, 64, generator=g)
    actions = torch.randint(0, A, (b, t), generator=g)
    tokens = torch.randint(0, wm.vocab_size, (b, t, wm.tokens_per_frame), generator=g)
    return frames, actions, tokens


def test_i_token_switch_changes_the_layout():
    on, off = make(i_tokens=True), make(i_tokens=False)
    assert on.tokens_per_step == 6 and off.tokens_per_step == 5
    assert on.max_len == 6 * on.cfg.max_steps and off.max_len == 5 * off.cfg.max_steps
    assert hasattr(on, "frame_cnn") and not hasattr(off, "frame_cnn")
    iris = make("iris")
    assert iris.tokens_per_step == 17
    # Without I-tokens the frames do not matter (and may be None).
    frames, actions, tokens = batch(off)
    a = off(None, actions, tokens).token_logits
    b = off(torch.rand_like(frames), actions, tokens).token_logits
    assert torch.equal(a, b)
    # With I-tokens they do.
    c = on(frames, actions, tokens).token_logits
    d = on(torch.rand_like(frames), actions, tokens).token_logits
    assert not torch.allclose(c, d)


@pytest.mark.parametrize("layout,i_tokens", [("delta", True), ("delta", False), ("iris", False)])
def test_forward_shapes_and_causality(layout, i_tokens):
    wm = make(layout, i_tokens)
    frames, actions, tokens = batch(wm)
    b, t, k = tokens.shape
    out = wm(frames, actions, tokens)
    assert out.token_logits.shape == (b, t, k, wm.vocab_size)
    assert out.reward_logits.shape == (b, t, wm.reward_codec.num_buckets)
    assert out.end_logits.shape == (b, t, 2)
    # Changing the last step's tokens must not change anything read before them.
    tokens2 = tokens.clone()
    tokens2[:, -1] = (tokens2[:, -1] + 1) % wm.vocab_size
    out2 = wm(frames, actions, tokens2)
    if layout == "delta":  # z_{t+1} comes after a_t: rewards and the block's first token are read before it
        assert torch.allclose(out.reward_logits, out2.reward_logits)
        assert torch.allclose(out.token_logits[:, :-1], out2.token_logits[:, :-1])
        assert torch.allclose(out.token_logits[:, -1, 0], out2.token_logits[:, -1, 0])
        assert not torch.allclose(out.token_logits[:, -1, 1:], out2.token_logits[:, -1, 1:])
    else:  # tok(x_t) comes before a_t: the last step's reward sees it, earlier outputs do not
        assert torch.allclose(out.reward_logits[:, :-1], out2.reward_logits[:, :-1])
        assert not torch.allclose(out.reward_logits[:, -1], out2.reward_logits[:, -1])
        assert torch.allclose(out.token_logits[:, :-2], out2.token_logits[:, :-2])
        assert torch.allclose(out.token_logits[:, -2, 0], out2.token_logits[:, -2, 0])
        assert not torch.allclose(out.token_logits[:, -2, 1:], out2.token_logits[:, -2, 1:])


@pytest.mark.parametrize("layout,i_tokens", [("delta", True), ("delta", False), ("iris", False)])
def test_loss_is_finite_and_learns(layout, i_tokens):
    wm = make(layout, i_tokens).train()
    frames, actions, tokens = batch(wm, b=2, t=3)
    rewards = torch.tensor([[0.0, 1.0, -0.1], [0.0, 2.0, 0.0]])
    ends = torch.tensor([[0, 0, 1], [0, 0, 0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    opt = torch.optim.Adam(wm.parameters(), lr=1e-2)
    history = []
    for _ in range(10):
        loss, m = wm.compute_loss(frames, actions, tokens, rewards, ends, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(m)
    assert set(m) >= {"loss_tokens", "loss_reward", "loss_end", "token_acc"}
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in history)
    first, last = history[0], history[-1]
    for key in ("loss_tokens", "loss_reward", "loss_end"):
        assert last[key] < 0.7 * first[key], key
    assert last["token_acc"] > first["token_acc"] + 0.2  # memorising one small batch


def test_paper_preset_has_the_published_size():
    c = paper()
    wm = WorldModel(c.world_model, tokens_per_frame=4, vocab_size=1024, num_actions=17)
    n = sum(p.numel() for p in wm.parameters())
    assert abs(n - 11.9e6) / 11.9e6 < 0.10, n


def _check_generation(wm, t0, t_total, iris=False):
    """Prime on t0 steps, teacher-force the rest one step at a time, compare every step's logits
    with a full forward over the window the cache holds at that step (the rolling policy: see the
    world_model docstring), and check that window against the policy."""
    b = 2
    frames, actions, tokens = batch(wm, b=b, t=t_total + 1, seed=3)
    s_max, keep = wm.cfg.max_steps, wm.window_keep
    cache = wm.new_cache(b)
    overflowed, reprimes, lo_before = False, 0, 0
    with torch.no_grad():
        if iris:
            wm.prime(cache, None, actions[:, :t0], tokens[:, :t0 + 1])
        else:
            wm.prime(cache, frames[:, :t0], actions[:, :t0], tokens[:, :t0])
        worst = 0.0
        for t in range(t0, t_total):
            forced = tokens[:, t + 1] if iris else tokens[:, t]
            z, reward, end_prob = wm.generate_step(cache, None if iris else frames[:, t], actions[:, t], tokens=forced)
            assert torch.equal(z, forced) and reward.shape == (b,) and end_prob.shape == (b,)
            lo = cache.start_step
            # Steps in the window: Δ lo..t; IRIS also holds tok(x_{t+1}), the frame being generated.
            steps = t + 1 - lo + int(iris)
            overflowed |= t + 1 + int(iris) > s_max
            reprimes += t > t0 and lo != lo_before
            lo_before = lo
            assert steps <= s_max and wm.window_steps(cache) == steps
            if overflowed:
                assert steps >= keep + 1, (t, steps)
            if iris:  # the full forward needs tok(x_{t+1}) in the window: it is step t+1's first part
                full = wm(None, actions[:, lo:t + 2], tokens[:, lo:t + 2])
                ref_tok = full.token_logits[:, t - lo]
            else:
                full = wm(frames[:, lo:t + 1], actions[:, lo:t + 1], tokens[:, lo:t + 1])
                ref_tok = full.token_logits[:, -1]
            ref_rew = full.reward_logits[:, t - lo]
            ref_end = full.end_logits[:, t - lo]
            got = cache.last
            worst = max(worst, (got.token_logits[:, 0] - ref_tok).abs().max().item(),
                        (got.reward_logits[:, 0] - ref_rew).abs().max().item(),
                        (got.end_logits[:, 0] - ref_end).abs().max().item())
            assert torch.allclose(reward, wm.reward_codec.decode(ref_rew), atol=1e-4)
    # A re-prime (one forward over the kept window) at most once every max_steps - keep steps.
    assert reprimes <= math.ceil((t_total - t0) / (s_max - keep)), reprimes
    return worst


@pytest.mark.parametrize("i_tokens", [True, False])
def test_kv_cached_generation_matches_full_forward(i_tokens):
    wm = make("delta", i_tokens)
    s_max = wm.cfg.max_steps
    # Within the window, and past it (the window then drops its oldest half and re-primes).
    assert _check_generation(wm, t0=2, t_total=s_max) < 1e-4
    assert _check_generation(wm, t0=1, t_total=3 * s_max + 1) < 1e-4
    assert _check_generation(wm, t0=0, t_total=3) < 1e-4  # no context at all
    assert _check_generation(wm, t0=2 * s_max, t_total=2 * s_max + 4) < 1e-4  # context longer than the window


def test_action_sees_frame_feeds_the_i_token_to_the_action_token():
    """With the flag the action token's input is a_t + I(x_t) (the I-token and the Δ-tokens unchanged),
    and cached generation stays exact."""
    wm = make("delta", True, action_sees_frame=True)
    assert _check_generation(wm, t0=1, t_total=2 * wm.cfg.max_steps) < 1e-4
    frames, actions, tokens = batch(wm, b=1, t=1)
    emb = wm._embed_steps(frames, actions, tokens)
    plain = make("delta", True)  # same seed, same weights but the action table: only the flag differs
    # The flag starts the action table at the I-token's scale (a LayerNorm output), not at std 0.02.
    assert 0.8 < wm.action_emb.weight.std() < 1.2 and plain.action_emb.weight.std() < 0.03
    plain.action_emb.weight.data.copy_(wm.action_emb.weight)
    plain_emb = plain._embed_steps(frames, actions, tokens)
    assert torch.allclose(emb[:, 0], plain_emb[:, 0])  # the I-token keeps its own position
    assert torch.allclose(emb[:, 1], plain_emb[:, 1] + plain_emb[:, 0])  # action token = a + I
    assert torch.allclose(emb[:, 2:], plain_emb[:, 2:])


def test_loss_weights_scale_their_terms():
    """token/reward/end_loss_weight (the published code's latents/rewards/ends_weight)."""
    wm = make("delta", True)
    frames, actions, tokens = batch(wm, b=2, t=4)
    rewards = torch.tensor([[0.0, 1.0, 0.0, -1.0], [0.0, 0.0, 1.0, 0.0]])
    ends = torch.tensor([[0, 0, 0, 1], [0, 0, 0, 0]], dtype=torch.bool)
    with torch.no_grad():
        loss, m = wm.compute_loss(frames, actions, tokens, rewards, ends)
        assert loss.item() == pytest.approx(m["loss_tokens"] + m["loss_reward"] + m["loss_end"], rel=1e-5)
        wm.cfg = dataclasses.replace(wm.cfg, token_loss_weight=0.1, reward_loss_weight=2.0, end_loss_weight=0.0)
        loss, m2 = wm.compute_loss(frames, actions, tokens, rewards, ends)
    assert m2["loss_tokens"] == pytest.approx(m["loss_tokens"]) and m2["loss_reward"] == pytest.approx(m["loss_reward"])
    assert loss.item() == pytest.approx(0.1 * m["loss_tokens"] + 2.0 * m["loss_reward"], rel=1e-5)


def test_rare_step_weight_counts_reward_and_end_steps_that_many_times():
    wm = make("delta", True)
    frames, actions, tokens = batch(wm, b=2, t=4)
    rewards = torch.tensor([[0.0, 1.0, 0.0, -1.0], [0.0, 0.0, 1.0, 0.0]])
    ends = torch.tensor([[0, 0, 0, 1], [0, 0, 0, 0]], dtype=torch.bool)
    rare = (rewards != 0) | ends
    with torch.no_grad():
        _, m = wm.compute_loss(frames, actions, tokens, rewards, ends)
        out = wm(frames, actions, tokens)
        ce_r = torch.nn.functional.cross_entropy(out.reward_logits.flatten(0, 1),
                                                 wm.reward_codec.encode(rewards.flatten()), reduction="none")
        ce_e = torch.nn.functional.cross_entropy(out.end_logits.flatten(0, 1), ends.flatten().long(), reduction="none")
        wm.cfg = dataclasses.replace(wm.cfg, rare_step_weight=5.0)
        _, m5 = wm.compute_loss(frames, actions, tokens, rewards, ends)
    n = rewards.numel()
    assert m5["loss_reward"] == pytest.approx(m["loss_reward"] + 4 * ce_r[rare.flatten()].sum().item() / n, rel=1e-5)
    assert m5["loss_end"] == pytest.approx(m["loss_end"] + 4 * ce_e[rare.flatten()].sum().item() / n, rel=1e-5)
    assert m5["loss_tokens"] == pytest.approx(m["loss_tokens"])


def test_change_step_weight_counts_the_tokens_of_changed_steps_that_many_times():
    wm = make("delta", True)
    frames, actions, tokens = batch(wm, b=2, t=4)
    seq = frames[:, :1].repeat(1, 5, 1, 1, 1).clone()  # 5 frames, 4 steps; steps 1 and 3 (batch 0) change
    seq[0, 2, :, :20] = 1 - seq[0, 2, :, :20]  # x_2 differs from x_1 (and x_3 from x_2) in >= 5% of pixels
    seq[1, 4, :, 0, 0] = 1 - seq[1, 4, :, 0, 0]  # one pixel: below 5%, not a change
    assert wm.step_weights(seq) is None  # weight 1: the paper's loss, untouched
    rewards, ends = torch.zeros(2, 4), torch.zeros(2, 4, dtype=torch.bool)
    with torch.no_grad():
        _, m = wm.compute_loss(frames, actions, tokens, rewards, ends)
        out = wm(frames, actions, tokens)
        ce = torch.nn.functional.cross_entropy(out.token_logits.flatten(0, 2), tokens.flatten(), reduction="none")
        wm.cfg = dataclasses.replace(wm.cfg, change_step_weight=3.0)
        w = wm.step_weights(seq)
        assert w.tolist() == [[1.0, 3.0, 3.0, 1.0], [1.0, 1.0, 1.0, 1.0]]
        _, m3 = wm.compute_loss(frames, actions, tokens, rewards, ends, step_weights=w)
    changed = (w > 1).repeat_interleave(wm.tokens_per_frame, dim=1).flatten()
    assert m3["loss_tokens"] == pytest.approx(m["loss_tokens"] + 2 * ce[changed].sum().item() / ce.numel(), rel=1e-5)
    assert m3["loss_reward"] == pytest.approx(m["loss_reward"])
    # Training batches go through the chunked gradient path (CPU: 2 sequences a chunk): same weighted loss.
    frames5, actions5, tokens5 = batch(wm, b=5, t=4)
    w5 = torch.tensor([[1.0, 3.0, 1.0, 3.0]] * 5)
    zeros = torch.zeros(5, 4)
    with torch.no_grad():
        _, whole = wm.compute_loss(frames5, actions5, tokens5, zeros, zeros.bool(), step_weights=w5)
    _, chunked = wm.compute_loss(frames5, actions5, tokens5, zeros, zeros.bool(), step_weights=w5)
    assert chunked["loss_tokens"] == pytest.approx(whole["loss_tokens"], rel=1e-5)


def test_slide_by_one_policy_is_still_exact():
    """window_keep = max_steps - 1: the window slides one step per step (re-prime every step)."""
    wm = make("delta", True)
    wm.window_keep = wm.cfg.max_steps - 1
    assert _check_generation(wm, t0=1, t_total=2 * wm.cfg.max_steps) < 1e-4


def test_kv_cached_generation_matches_full_forward_iris():
    wm = make("iris")
    assert _check_generation(wm, t0=1, t_total=wm.cfg.max_steps - 1, iris=True) < 1e-4
    assert _check_generation(wm, t0=2, t_total=3 * wm.cfg.max_steps, iris=True) < 1e-4


def test_long_context_is_truncated_to_the_window_and_sampling_is_valid():
    wm = make("delta", True)
    frames, actions, tokens = batch(wm, b=3, t=2 * wm.cfg.max_steps)
    cache = wm.new_cache(3)
    with torch.no_grad():
        wm.prime(cache, frames[:, :-1], actions[:, :-1], tokens[:, :-1])
        z, reward, end_prob = wm.generate_step(cache, frames[:, -1], actions[:, -1], temperature=1.0)
    assert cache.length <= wm.max_len
    assert z.shape == (3, 4) and z.dtype == torch.long and ((z >= 0) & (z < wm.vocab_size)).all()
    assert ((end_prob >= 0) & (end_prob <= 1)).all() and torch.isfinite(reward).all()
    # Greedy sampling follows the argmax of the logits left in the cache.
    with torch.no_grad():
        z, _, _ = wm.generate_step(cache, frames[:, -1], actions[:, -1], temperature=0.0)
    assert torch.equal(z[:, 0], cache.last.token_logits[:, 0, 0].argmax(-1))


@pytest.mark.parametrize("layout", ["delta", "iris"])
def test_chunked_loss_matches_one_pass(layout):
    """grad_chunk computes a large batch's gradients a few sequences at a time: same loss, metrics
    and gradients as one pass (masked steps and a fully masked sequence included)."""
    results = []
    for chunk in (0, 2):
        wm = make(layout, grad_chunk=chunk).train()
        frames, actions, tokens = batch(wm, b=7)
        g = torch.Generator().manual_seed(2)
        rewards = torch.randn(actions.shape, generator=g)
        ends = torch.randint(0, 2, actions.shape, generator=g)
        mask = torch.rand(actions.shape, generator=g) > 0.3
        mask[3] = False
        loss, metrics = wm.compute_loss(frames, actions, tokens, rewards, ends, mask)
        loss.backward()
        grads = torch.cat([p.grad.flatten() for p in wm.parameters() if p.grad is not None])
        results.append((loss.item(), metrics, grads))
    (l0, m0, g0), (l1, m1, g1) = results
    assert l0 == pytest.approx(l1, rel=1e-6)
    assert m0 == pytest.approx(m1, rel=1e-5)
    assert g0.shape == g1.shape and (g0 - g1).norm() <= 1e-5 * g0.norm()


def test_few_row_linear_split_over_threads_matches_linear():
    """The batch-1 fast path of world_model.Linear (weights cut into per-thread blocks) == nn.Linear."""
    from model.nets import fastpath
    from model.nets.world_model import Linear

    torch.manual_seed(0)
    lin = Linear(64, 96)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.inference_mode():
            for shape in [(1, 64), (2, 3, 64), (1, 8, 64), (16, 64)]:
                x = torch.randn(shape)
                fast = lin(x)
                with fastpath.plain():
                    plain = lin(x)
                assert fast.shape == plain.shape == (*shape[:-1], 96)
                assert torch.allclose(fast, plain, atol=1e-5)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("threads", [1, 2])
def test_lean_single_token_pass_matches_the_general_trunk_and_is_taken(threads):
    """``_trunk_token`` (functional, one token) == ``_trunk`` on the same cache, keys and values included
    (float32, 1e-5); generation takes it on the fast path and not under ``fastpath.plain()``."""
    from model.nets import fastpath

    wm = make("delta", True)
    frames, actions, tokens = batch(wm, b=2, t=4)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            caches = [wm.new_cache(2), wm.new_cache(2)]
            emb = wm._embed_steps(frames, actions, tokens)
            for c in caches:
                wm._trunk(emb, c, 0)
            x = torch.randn(2, 1, wm.cfg.embed_dim)
            pos = emb.size(1)
            lean, general = wm._trunk_token(x, caches[0], pos), wm._trunk(x, caches[1], pos)
            assert torch.allclose(lean, general, atol=1e-5)
            for k0, k1 in zip(caches[0].k + caches[0].v, caches[1].k + caches[1].v):
                assert torch.allclose(k0[:, :, :pos + 1], k1[:, :, :pos + 1], atol=1e-5)
            calls = []
            wm._trunk_token = lambda *a: calls.append(1) or WorldModel._trunk_token(wm, *a)
            for plain in (False, True):
                calls.clear()
                cache = wm.new_cache(1)
                wm.prime(cache, frames[:1, :2], actions[:1, :2], tokens[:1, :2])
                with fastpath.plain() if plain else torch.no_grad():
                    wm.generate_step(cache, frames[:1, 2], actions[:1, 2])
                assert len(calls) == (0 if plain else wm.tokens_per_frame - 1)
    finally:
        torch.set_num_threads(before)
        wm.__dict__.pop("_trunk_token", None)


def test_unshuffled_frame_cnn_keeps_the_summary_shape_and_costs_less():
    """`frame_cnn_unshuffle` (cpu preset on GridWorld): same 8x8 summary from a 2x2 pixel-unshuffle, with
    the full-resolution level gone: it sees every pixel with about 40% fewer FLOPs."""
    from model.nets.blocks import FrameCNN

    x = torch.rand(2, 3, 64, 64)
    plain, fast = FrameCNN(3, 16, 8), FrameCNN(3, 16, 8, unshuffle=True)
    assert plain(x).shape == fast(x).shape == (2, 8, 8, 8)
    assert fast.net.stem.in_channels == 12
    flops = []
    for net in (plain, fast):
        with torch.profiler.profile(with_flops=True) as p:
            net(x)
        flops.append(sum(e.flops for e in p.key_averages()))
    assert flops[1] < 0.7 * flops[0], flops  # measured 0.61
    x2 = x.clone()
    x2[:, :, 0, 1] += 0.5  # one pixel of a 2x2 block: the summary must change (nothing dropped)
    assert not torch.allclose(fast(x), fast(x2))


def test_pooled_i_token_adds_the_per_channel_max_and_generates_exactly():
    """`frame_cnn_pool`: the I-token CNN's features end with each channel's max over its 8x8 map, so a pattern
    (GridWorld: an enemy next to the agent) gives one feature wherever it is on the grid."""
    wm = make("delta", True, frame_cnn_pool=True, action_sees_frame=True)
    c = wm.cfg
    assert wm.frame_cnn.out_dim == c.frame_latent * (8 * 8 + 1) == wm.frame_proj.in_features
    x = torch.rand(3, 3, 64, 64)
    m = wm.frame_cnn(x)
    assert torch.allclose(wm.frame_cnn.features(x)[:, -c.frame_latent:], m.amax(dim=(2, 3)))
    frames, actions, tokens = batch(wm)
    out = wm(frames, actions, tokens)
    assert out.reward_logits.shape[:2] == actions.shape
    assert _check_generation(wm, t0=1, t_total=2 * c.max_steps) < 1e-4


def test_digit_head_gives_normalised_log_probabilities_and_generates():
    torch.manual_seed(0)
    c = tiny()
    levels = (4, 4, 4, 4, 4)
    cfg = dataclasses.replace(c.world_model, token_head="digits")
    wm = WorldModel(cfg, tokens_per_frame=4, vocab_size=1024, num_actions=A, digit_levels=levels).eval()
    assert wm.head_tokens[-1].out_features == 20
    frames, actions, tokens = batch(wm, t=5)
    with torch.no_grad():
        out = wm(frames, actions, tokens)
        assert out.token_logits.shape[-1] == 1024
        assert torch.allclose(out.token_logits.logsumexp(-1), torch.zeros(()), atol=1e-4)
        # A code's log-probability is the sum of its digits' log-softmax.
        code = 1 * 1 + 2 * 4 + 3 * 16 + 0 * 64 + 1 * 256  # digits (1, 2, 3, 0, 1), FSQ's mixed radix
        h = torch.randn(3, cfg.embed_dim)
        raw = wm.head_tokens.raw(h)
        want = sum(raw[:, 4 * g:4 * g + 4].log_softmax(-1)[:, d] for g, d in enumerate((1, 2, 3, 0, 1)))
        assert torch.allclose(wm.head_tokens(h)[:, code], want, atol=1e-5)
        loss, stats = wm.compute_loss(frames, actions, tokens, torch.zeros(2, 5), torch.zeros(2, 5, dtype=torch.long),
                                      torch.ones(2, 5, dtype=torch.bool))
        assert torch.isfinite(loss)
        cache = wm.new_cache(2)
        wm.prime(cache, frames[:, :3], actions[:, :3], tokens[:, :3])
        z, _, _ = wm.generate_step(cache, frames[:, 3], actions[:, 3])
        assert z.shape == (2, 4) and (z < 1024).all()
    # A flat head's weights warm-start the digit head (the mean over the codes that share a digit).
    flat = WorldModel(c.world_model, tokens_per_frame=4, vocab_size=1024, num_actions=A)
    state = wm.adapt_state_dict(flat.state_dict())
    wm.load_state_dict(state, strict=True)
    w = flat.head_tokens[-1].weight
    assert torch.allclose(wm.head_tokens[-1].weight[4 + 2], w[(torch.arange(1024) // 4) % 4 == 2].mean(0))
    with pytest.raises(ValueError, match="FSQ"):
        WorldModel(cfg, tokens_per_frame=4, vocab_size=1024, num_actions=A)


def _motion_model(seed=0):
    from model.data.view_motion import geometry_for

    torch.manual_seed(seed)
    c = tiny()
    cfg = dataclasses.replace(c.world_model, motion_input=True)
    return WorldModel(cfg, tokens_per_frame=4, vocab_size=c.tokenizer.vocab_size, num_actions=A,
                      view=geometry_for("crafter")).eval()


def test_motion_input_starts_as_the_model_it_warm_starts_from_and_generates_exactly():
    """A warm start from a model without the input adds a motion head and a zero motion table, so its logits are the
    old model's; its motions go into the action token; cached generation stays exact (teacher-forced tokens get
    the likeliest motion, as forward does); loss needs labels and adds the classifier's term."""
    old = make("delta", True)
    wm = _motion_model(seed=5)
    wm.load_state_dict(wm.adapt_state_dict(old.state_dict()))
    frames, actions, tokens = batch(wm, b=2, t=4)
    with torch.no_grad():
        assert torch.equal(old(frames, actions, tokens).token_logits, wm(frames, actions, tokens).token_logits)
        wm.motion_emb.weight.normal_()
        assert not torch.allclose(old(frames, actions, tokens).token_logits, wm(frames, actions, tokens).token_logits)
        out = wm(frames, actions, tokens)
    assert out.motion_logits.shape == (2, 4, 5)
    assert _check_generation(wm, t0=1, t_total=wm.cfg.max_steps + 3) < 1e-4
    with pytest.raises(ValueError, match="motion input"):
        wm.compute_loss(frames, actions, tokens, torch.zeros(2, 4), torch.zeros(2, 4))
    motions = torch.randint(0, 5, (2, 4))
    _, m = wm.compute_loss(frames, actions, tokens, torch.zeros(2, 4), torch.zeros(2, 4), motions=motions)
    assert m["loss_motion"] > 0 and 0 <= m["motion_acc"] <= 1
    cache = wm.new_cache(2)
    wm.prime(cache, frames[:, :2], actions[:, :2], tokens[:, :2])
    given = torch.tensor([3, 0])
    wm.generate_step(cache, frames[:, 2], actions[:, 2], motions=given, score_actions=True)
    assert torch.equal(cache.motion, given) and cache.outcomes[0].shape == (2, A)


def test_motion_input_is_only_for_models_with_i_tokens():
    from model.data.view_motion import geometry_for

    c = tiny()
    cfg = dataclasses.replace(c.world_model, motion_input=True, i_tokens=False)
    wm = WorldModel(cfg, tokens_per_frame=4, vocab_size=c.tokenizer.vocab_size, num_actions=A,
                    view=geometry_for("crafter"))
    assert not wm.motion and not hasattr(wm, "motion_head")  # the ablation stays blind to the frame
    with pytest.raises(ValueError, match="scrolling view"):
        WorldModel(dataclasses.replace(cfg, i_tokens=True), tokens_per_frame=4, vocab_size=c.tokenizer.vocab_size,
                   num_actions=A)


def test_the_motion_head_trains_at_its_own_learning_rate():
    from model.train.phases import make_optimizer

    wm = _motion_model()
    opt = make_optimizer(wm, 3e-4, 0.01)
    head = {id(p) for p in wm.motion_head.parameters()}
    for g in opt.param_groups:
        ids = {id(p) for p in g["params"]}
        assert ids <= head or not ids & head  # a group is all head or no head
        assert g["lr"] == pytest.approx(3e-4 * (wm.motion_head.lr_scale if ids & head else 1.0))
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(wm.parameters()))
    assert len(make_optimizer(make("delta", True), 3e-4, 0.01).param_groups) == 2  # as before: resumable
