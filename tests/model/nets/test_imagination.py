"""DreamEnv with the real tiny tokenizer and world model: wiring, windows, model swap."""
import dataclasses

import pytest
import torch

from model.config import tiny
from model.nets.imagination import DreamEnv
from model.nets.tokenizer import build_tokenizer
from model.nets.world_model import WorldModel

A = 5


def models(kind="delta", i_tokens=True, seed=0):
    torch.manual_seed(seed)
    c = tiny()
    tcfg = c.tokenizer if kind == "delta" else dataclasses.replace(c.tokenizer, kind="iris", tokens_per_frame=16)
    tok = build_tokenizer(tcfg, A).eval()
    wm = WorldModel(dataclasses.replace(c.world_model, i_tokens=i_tokens), tokens_per_frame=tok.tokens_per_frame,
                    vocab_size=tok.vocab_size, num_actions=A, layout=kind).eval()
    return tok, wm


def context(b=2, t0=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, t0, 3, 64, 64, generator=g), torch.randint(0, A, (b, t0 - 1), generator=g)


def full_forward_on_history(dream):
    """Reference: the world model's full forward over the steps of the dream's kept history that its
    cache window holds (last step = the last step taken; see the world model's window policy)."""
    frames = torch.stack(list(dream._frames), 1)
    actions = torch.stack(list(dream._actions), 1)
    tokens = torch.stack(list(dream._tokens), 1)
    n = dream.world_model.window_steps(dream.cache)
    assert n <= min(actions.size(1), dream.world_model.cfg.max_steps)
    actions = actions[:, -n:]
    return dream.world_model(frames[:, -n - 1:-1], actions, tokens[:, -n:])


@pytest.mark.parametrize("i_tokens", [True, False])
def test_dream_step_is_the_world_model_and_tokenizer_wired_together(i_tokens):
    tok, wm = models(i_tokens=i_tokens)
    frames, actions = context()
    dream = DreamEnv(tok, wm, temperature=0.0)  # greedy: tokens are the argmax of the logits
    x = dream.reset(frames, actions)
    assert torch.equal(x, frames[:, -1])
    a = torch.tensor([1, 3])
    nxt, reward, end_prob = dream.step(a)
    assert nxt.shape == (2, 3, 64, 64) and reward.shape == (2,) and end_prob.shape == (2,)
    assert nxt.min() >= 0 and nxt.max() <= 1 and ((end_prob >= 0) & (end_prob <= 1)).all()
    z = dream._tokens[-1]
    with torch.no_grad():
        out = full_forward_on_history(dream)
        assert torch.equal(out.token_logits[:, -1].argmax(-1), z)
        assert torch.allclose(reward, wm.reward_codec.decode(out.reward_logits[:, -1]), atol=1e-4)
        assert torch.allclose(end_prob, out.end_logits[:, -1].softmax(-1)[:, 1], atol=1e-5)
        assert torch.allclose(nxt, tok.decode(frames[:, -1], a, z), atol=1e-5)
    # The context's tokens are the tokenizer's Δ-tokens of the real transitions.
    assert torch.equal(dream._tokens[0], tok.encode(frames[:, 0], actions[:, 0], frames[:, 1]))


def test_long_rollout_past_the_window_and_outputs_are_ordinary_tensors():
    tok, wm = models()
    frames, actions = context(b=3, t0=4)
    dream = DreamEnv(tok, wm, temperature=1.0)
    dream.reset(frames, actions)
    for t in range(wm.cfg.max_steps + 3):
        x, r, d = dream.step(torch.randint(0, A, (3,)))
        assert torch.isfinite(x).all() and torch.isfinite(r).all()
    assert dream.cache.length <= wm.max_len
    assert len(dream._frames) == wm.cfg.max_steps + 1 and len(dream._actions) == wm.cfg.max_steps
    # Dreamed frames can enter a network that is being trained (not inference tensors).
    conv = torch.nn.Conv2d(3, 2, 3)
    conv(x).sum().backward()
    assert conv.weight.grad is not None
    # And the last step still agrees with a full forward over the kept window (greedy check).
    dream.temperature = 0.0
    dream.step(torch.zeros(3, dtype=torch.long))
    with torch.no_grad():
        out = full_forward_on_history(dream)
    assert torch.equal(out.token_logits[:, -1].argmax(-1), dream._tokens[-1])


def test_swapping_the_world_model_keeps_the_frame_and_reprimes_from_history():
    tok, wm_on = models(i_tokens=True, seed=0)
    _, wm_off = models(i_tokens=False, seed=1)
    frames, actions = context()
    dream = DreamEnv(tok, wm_on, temperature=0.0)
    dream.reset(frames, actions)
    dream.step(torch.tensor([0, 1]))
    before = dream.frame.clone()
    dream.set_world_model(wm_off)
    assert torch.equal(dream.frame, before) and dream.world_model is wm_off
    dream.step(torch.tensor([2, 2]))
    with torch.no_grad():
        out = full_forward_on_history(dream)  # now with wm_off, over real + dreamed history
    assert torch.equal(out.token_logits[:, -1].argmax(-1), dream._tokens[-1])
    # A tokenizer/world-model mismatch is refused with a clear message.
    iris_tok, iris_wm = models("iris")
    with pytest.raises(ValueError, match="cannot drive"):
        dream.set_world_model(iris_wm)
    # Swapping both re-encodes the kept frames with the new tokenizer.
    dream.set_world_model(iris_wm, iris_tok)
    x, r, d = dream.step(torch.tensor([1, 1]))
    assert x.shape == (2, 3, 64, 64) and len(dream._tokens) == len(dream._frames)


def test_iris_dream():
    tok, wm = models("iris")
    frames, actions = context()
    dream = DreamEnv(tok, wm, temperature=0.0)
    dream.reset(frames, actions)
    a = torch.tensor([4, 0])
    x, r, d = dream.step(a)
    z = dream._tokens[-1]
    assert z.shape == (2, 16)
    assert torch.allclose(x, tok.decode(None, None, z), atol=1e-5)
    toks = torch.stack(list(dream._tokens), 1)  # tok(x_0..x_3)
    acts = torch.stack(list(dream._actions), 1)  # a_0..a_2
    acts = torch.cat([acts, torch.zeros_like(acts[:, :1])], 1)  # a dummy a_3 puts tok(x_3) in the sequence
    with torch.no_grad():
        out = wm(None, acts, toks)
    assert torch.equal(out.token_logits[:, -2].argmax(-1), z)  # step 2 predicts tok(x_3)
    assert torch.allclose(r, wm.reward_codec.decode(out.reward_logits[:, -2]), atol=1e-4)


def test_single_frame_context_and_bf16_conv_nets():
    """autocast_mode="bf16": the conv nets run in bf16, the transformer, its cache and every output stay float32."""
    tok, wm = models()
    frames, actions = context(b=2, t0=1)
    assert actions.shape == (2, 0)
    dream = DreamEnv(tok, wm, autocast_mode="bf16")
    seen: dict[str, set] = {"decoder": set(), "i_token_cnn": set(), "token_head": set()}
    mods = {"decoder": tok.decoder.inp, "i_token_cnn": wm.frame_cnn.net.stem, "token_head": wm.head_tokens}
    hooks = [m.register_forward_hook(lambda _m, _i, out, k=k: seen[k].add(out.dtype)) for k, m in mods.items()]
    try:
        x = dream.reset(frames, actions)
        assert torch.equal(x, frames[:, 0]) and dream.cache.k[0].dtype == torch.float32
        for _ in range(wm.cfg.max_steps + 1):
            x, r, d = dream.step(torch.tensor([1, 2]))
    finally:
        for h in hooks:
            h.remove()
    assert seen == {"decoder": {torch.bfloat16}, "i_token_cnn": {torch.bfloat16}, "token_head": {torch.float32}}
    assert x.dtype == r.dtype == d.dtype == torch.float32
    assert torch.isfinite(x).all() and torch.isfinite(r).all() and ((d >= 0) & (d <= 1)).all()
    with torch.inference_mode():  # outside a dream every net is float32 again
        assert tok.decode(frames[:, 0], torch.tensor([1, 2]), dream.last_tokens).dtype == torch.float32


@pytest.mark.parametrize("kind,i_tokens,sees_frame", [("delta", True, False), ("delta", True, True),
                                                      ("delta", False, False), ("iris", False, False)])
def test_probed_outcomes_are_what_stepping_each_action_gives(kind, i_tokens, sees_frame):
    """The lookahead's scores of every action (one extra token each, cache untouched) equal the reward and
    end probability of actually stepping that action, at every step, across a window flush."""
    tok, wm = models(kind, i_tokens)
    wm.cfg.action_sees_frame = sees_frame
    frames, actions = context()
    taken = torch.tensor([[1, 3], [2, 2], [4, 0], [0, 1], [3, 4], [1, 1], [2, 3], [4, 4]])  # past max_steps=6
    probe = DreamEnv(tok, wm, temperature=0.0, probe_actions=True)
    probe.reset(frames, actions)
    for t, a in enumerate(taken):
        _, reward, end_prob = probe.step(a)
        scored_r, scored_end = probe.outcomes
        assert scored_r.shape == scored_end.shape == (2, A)
        assert torch.allclose(scored_r[torch.arange(2), a], reward, atol=1e-5)
        for b in range(A):  # replay the same greedy history, then step b instead
            ref = DreamEnv(tok, wm, temperature=0.0)
            ref.reset(frames, actions)
            for prev in taken[:t]:
                ref.step(prev)
            _, r_b, e_b = ref.step(torch.full((2,), b))
            assert torch.allclose(scored_r[:, b], r_b, atol=1e-5) and torch.allclose(scored_end[:, b], e_b, atol=1e-5)
    assert scored_r.std(1).min() > 0  # the actions score differently: the check above is not vacuous


def primed(kind: str = "delta", t0: int = 3, temperature: float = 1.0):
    """Tokenizer, world model, a batch-1 context and a dream primed on it: the branch and token-edit tests' start."""
    tok, wm = models(kind)
    frames, actions = context(b=1, t0=t0)
    dream = DreamEnv(tok, wm, temperature=temperature)
    dream.reset(frames, actions)
    return tok, wm, frames, actions, dream


@pytest.mark.parametrize("kind", ["delta", "iris"])
def test_branches_copy_the_state_and_continuing_from_one_is_exact(kind):
    tok, wm, frames, actions, dream = primed(kind, t0=4)
    dream.step(torch.tensor([2]))
    # Near-zero temperature: every branch is the greedy step, the same as the dream's own greedy step.
    same = dream.branch(3, 6, temperature=1e-6)
    assert (same.tokens == same.tokens[:1]).all() and torch.equal(same.frames, same.frames[:1].expand_as(same.frames))
    assert same.logp.shape == (6,) and (same.logp <= 0).all()
    greedy = DreamEnv(tok, wm, temperature=0.0)
    greedy.reset(frames, actions)
    greedy.step(torch.tensor([2]), tokens=dream.last_tokens)
    greedy.step(torch.tensor([3]))
    assert torch.equal(greedy.last_tokens, same.tokens[:1])
    # Temperature 1: the branches sample their own tokens; the dream itself did not move.
    before = dream.frame.clone()
    many = dream.branch(3, 8)
    assert torch.equal(dream.frame, before) and len({tuple(t.tolist()) for t in many.tokens}) > 1
    # Their log-probabilities are the world model's, read from a teacher-forced forward.
    k = 5
    nxt, _, _ = dream.step(torch.tensor([3]), tokens=many.tokens[k:k + 1], frame=many.frames[k:k + 1])
    assert torch.equal(nxt, many.frames[k:k + 1]) and torch.equal(dream.last_tokens, many.tokens[k:k + 1])
    logp = dream.last_logits().log_softmax(-1).gather(-1, many.tokens[k][:, None]).sum()
    assert torch.allclose(logp, many.logp[k], atol=1e-3)


@pytest.mark.parametrize("kind", ["delta", "iris"])
def test_last_logits_are_the_logits_the_step_sampled_from(kind):
    dream = primed(kind)[-1]
    for a in (1, 4, 0):
        dream.step(torch.tensor([a]))
        sampled = dream.cache.last.token_logits[0, 0]
        assert torch.allclose(dream.last_logits(), sampled, atol=1e-4)


def test_replacing_the_last_tokens_decodes_again_and_the_dream_goes_on():
    tok, wm, frames, actions, dream = primed()
    prev = dream.frame.clone()
    dream.step(torch.tensor([2]))
    new = dream.last_tokens.clone()
    new[0, 1] = (new[0, 1] + 17) % tok.vocab_size
    frame = dream.replace_last(new)
    with torch.no_grad():
        assert torch.allclose(frame, tok.decode(prev, torch.tensor([2]), new), atol=1e-6)
    assert torch.equal(dream.last_tokens, new) and torch.equal(dream.frame, frame)
    # The re-primed cache is the one a fresh dream gets from the same history.
    again = DreamEnv(tok, wm, temperature=0.0)
    again.reset(frames, actions)
    again.step(torch.tensor([2]), tokens=new, frame=frame)
    dream.temperature = 0.0
    assert torch.equal(dream.step(torch.tensor([1]))[0], again.step(torch.tensor([1]))[0])
    with pytest.raises(ValueError, match="batch-1"):
        wide = DreamEnv(tok, wm)
        wide.reset(*context(b=2))
        wide.branch(0, 4)
