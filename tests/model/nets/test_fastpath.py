"""The fast path (model/nets/fastpath.py) computes what the plain float32 path computes (issue 8, point 5).

A tiny Δ-tokenizer (the paper design) and world model are trained briefly on real Crafter frames (a
random policy), then run both ways: tokens, decoded frames and greedy dream rollouts are compared.
bf16 autocast, which *does* change the numbers, is measured against float32 on the same model.
Run with ``-s`` to see the measured figures (docs/benchmarks.md quotes them).
"""
from __future__ import annotations

import contextlib
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import REPO
from model.nets import fastpath
from model.checkpoint import load_checkpoint
from model.device import image_autocast
from model.config import tiny
from model.data.envs import make_env
from model.data.frames import to_tensor
from model.nets.imagination import DreamEnv
from model.nets.tokenizer import build_tokenizer
from model.nets.world_model import WorldModel

A = 17  # Crafter actions
N_TRAIN = 200  # transitions 0..199 train the models, the rest is held out


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a.float() - b.float()).pow(2).mean().item()
    return 10 * math.log10(1.0 / max(mse, 1e-20))


def agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a == b).float().mean().item()


@contextlib.contextmanager
def threads(n: int):
    """Run with n torch threads (the world model's batch-1 linears take their fast path only with > 1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data():
    """Random-policy Crafter play: frames (T+1, 3, 64, 64) in [0, 1], actions (T,), valid (T,):
    transition t (x_t, a_t -> x_{t+1}) is real unless an episode ended there (x_{t+1} is a reset)."""
    env = make_env("crafter", seed=0)
    rng = np.random.default_rng(0)
    obs, _ = env.reset()
    frames, actions, valid = [obs], [], []
    while len(actions) < 260:
        a = int(rng.integers(A))
        obs, _, terminated, truncated, _ = env.step(a)
        if terminated or truncated:
            obs, _ = env.reset()
        frames.append(obs)
        actions.append(a)
        valid.append(not (terminated or truncated))
    env.close()
    return to_tensor(np.stack(frames)).contiguous(), torch.tensor(actions), torch.tensor(valid)


def held_out(data, n: int = 36):
    """The last n real transitions after the training range: (x_t, a_t, x_{t+1})."""
    frames, actions, valid = data
    t = N_TRAIN + torch.nonzero(valid[N_TRAIN:]).flatten()[-n:]
    assert t.numel() == n
    return frames[t], actions[t], frames[t + 1]


def held_out_psnr(tok, data) -> float:
    prev, act, nxt = held_out(data)
    with torch.inference_mode():
        return psnr(tok.reconstruct(prev, act, nxt)[0], nxt)


@pytest.fixture(scope="module")
def trained(data):
    """Tiny tokenizer and world model trained on the first N_TRAIN transitions. A short training: the
    point is trained weights and activations (not the init's), not a good model."""
    frames, actions, valid = data
    cfg = tiny()
    torch.manual_seed(0)
    tok = build_tokenizer(cfg.tokenizer, A)
    tok.untrained_psnr = held_out_psnr(tok.eval(), data)
    tok.train()
    opt = torch.optim.AdamW(tok.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    pairs = torch.nonzero(valid[:N_TRAIN]).flatten()
    for _ in range(50):
        i = pairs[torch.randint(0, pairs.numel(), (16,), generator=g)]
        loss, _ = tok.compute_loss(frames[i], actions[i], frames[i + 1])
        opt.zero_grad()
        loss.backward()
        opt.step()
    tok.eval()
    wm = WorldModel(cfg.world_model, tok.tokens_per_frame, tok.vocab_size, A)
    with torch.no_grad():
        tokens = tok.encode(frames[:-1], actions, frames[1:])
    L = cfg.world_model.max_steps
    starts = torch.tensor([t for t in range(N_TRAIN - L) if valid[t:t + L].all()])
    opt = torch.optim.AdamW(wm.parameters(), lr=3e-3)
    zeros = torch.zeros(4, L)
    for _ in range(40):
        s = starts[torch.randint(0, starts.numel(), (4,), generator=g)][:, None] + torch.arange(L)
        loss, _ = wm.compute_loss(frames[s], actions[s], tokens[s], zeros, zeros.long())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return tok, wm.eval()


def encode_decode_both_paths(tok, prev, act, nxt) -> tuple[torch.Tensor, ...]:
    """(tokens, frames) on the fast path, then on the plain path; the plain path decodes the fast
    path's tokens, which isolates the decoder."""
    with torch.inference_mode():
        z_fast = tok.encode(prev, act, nxt)
        x_fast = tok.decode(prev, act, z_fast)
        with fastpath.plain():
            z_plain = tok.encode(prev, act, nxt)
            x_plain = tok.decode(prev, act, z_fast)
    return z_fast, x_fast, z_plain, x_plain


def test_tokens_and_decoded_frames_agree(data, trained):
    tok, _ = trained
    prev, act, nxt = held_out(data)
    z_fast, x_fast, z_plain, x_plain = encode_decode_both_paths(tok, prev, act, nxt)
    print(f"\nfast vs plain: tokens {agreement(z_fast, z_plain):.2%} equal, frames {psnr(x_fast, x_plain):.1f} dB "
          f"apart; reconstruction {psnr(x_fast, nxt):.3f} vs {psnr(x_plain, nxt):.3f} dB")
    # Tokens: the paths differ by float rounding (~1e-6 relative), so a token can only flip where two
    # codes are that close in distance; allowing 1% leaves room for such ties, while a real error (a
    # wrong layout, a wrong kernel) changes most of them.
    assert agreement(z_fast, z_plain) >= 0.99
    # Frames: 60 dB is above the error of storing a frame as 8 bits (58.9 dB for a uniform error of half
    # a level), i.e. the two paths show the same image on screen; float32 rounding alone gives > 100 dB.
    assert psnr(x_fast, x_plain) >= 60.0
    assert abs(psnr(x_fast, nxt) - psnr(x_plain, nxt)) < 0.01  # reconstruction quality unchanged
    assert psnr(x_fast, nxt) > tok.untrained_psnr + 3.0  # the weights are trained ones


def greedy_rollouts(tok, wm, data, steps: int, n_threads: int = 1) -> list[tuple[torch.Tensor, ...]]:
    """Greedy dreams from the same real held-out context (3 copies, random plans), fast path then
    plain path, each on its own. One thread: with two on a busy 2-core machine OpenMP waits make this
    ~10x slower; the world model's split batch-1 linears (> 1 thread) are compared with nn.Linear in
    tests/test_world_model.py.
    Returns per path (frames (3, steps+1, ...), tokens (3, steps, K), rewards (3, steps), plan)."""
    frames, actions, valid = data
    s = next(t for t in range(N_TRAIN, len(valid) - 4) if valid[t:t + 4].all())  # 5 real frames
    ctx_f, ctx_a = frames[None, s:s + 5].repeat(3, 1, 1, 1, 1), actions[None, s:s + 4].repeat(3, 1)
    plan = torch.randint(0, A, (steps, 3), generator=torch.Generator().manual_seed(1))
    runs = []
    for plain in (False, True):
        with fastpath.plain() if plain else contextlib.nullcontext(), threads(n_threads):
            dream = DreamEnv(tok, wm, temperature=0.0)
            xs, zs, rs = [dream.reset(ctx_f, ctx_a)], [], []
            for t in range(steps):
                x, r, _ = dream.step(plan[t])
                xs.append(x)
                zs.append(dream._tokens[-1])
                rs.append(r)
            runs.append((torch.stack(xs, 1), torch.stack(zs, 1), torch.stack(rs, 1), plan))
    return runs


def one_step_decodes_psnr(tok, run) -> float:
    """The plain path decoding the fast rollout's own inputs, one step at a time, vs its frames.
    (Whole rollouts are not compared pixel by pixel: each frame is decoded from the previous one, and
    a briefly trained decoder amplifies any rounding difference step after step.)"""
    x, z, _, plan = run
    with torch.inference_mode(), fastpath.plain():
        redo = tok.decode(x[:, :-1].flatten(0, 1), plan.t().flatten(), z.flatten(0, 1))
    return psnr(redo, x[:, 1:].flatten(0, 1))


def test_dream_rollouts_agree(data, trained):
    """Past two window re-primes of the world model."""
    tok, wm = trained
    fast, plain = greedy_rollouts(tok, wm, data, steps=2 * wm.cfg.max_steps + 1)
    # Same 99% token criterion as above; a flip early in a rollout would change everything after it.
    print(f"\ndream: tokens {agreement(fast[1], plain[1]):.2%} equal, one-step decodes "
          f"{one_step_decodes_psnr(tok, fast):.1f} dB apart")
    assert agreement(fast[1], plain[1]) >= 0.99
    assert torch.allclose(fast[2], plain[2], atol=1e-4)
    assert one_step_decodes_psnr(tok, fast) >= 60.0


def test_bundled_checkpoint_agrees(data):
    """The same checks on the bundled, trained Crafter checkpoint (cpu preset), and the dream's bf16 conv nets
    (``image_autocast``, what a dream runs on a CPU with bf16 matrix units) against float32, with the bounds of
    :func:`test_bf16_autocast_accuracy`."""
    ck = load_checkpoint(REPO / "checkpoints" / "crafter", device="cpu",
                         with_state=False)
    tok, wm = ck.models["tokenizer"].eval(), ck.models["world_model"].eval()
    prev, act, nxt = held_out(data)
    z_fast, x_fast, z_plain, x_plain = encode_decode_both_paths(tok, prev, act, nxt)
    with torch.inference_mode(), image_autocast(torch.device("cpu"), "bf16"):
        z16 = tok.encode(prev, act, nxt)
        x16 = tok.decode(prev, act, z_fast)
    fast, plain = greedy_rollouts(tok, wm, data, steps=8)
    print(f"\nbundled checkpoint, fast vs plain: tokens {agreement(z_fast, z_plain):.2%} equal, frames "
          f"{psnr(x_fast, x_plain):.1f} dB apart, reconstruction {psnr(x_fast, nxt):.3f} vs {psnr(x_plain, nxt):.3f} dB;"
          f" dream tokens {agreement(fast[1], plain[1]):.2%} equal, one-step decodes "
          f"{one_step_decodes_psnr(tok, fast):.1f} dB apart\n"
          f"bundled checkpoint, bf16 vs float32: tokens {agreement(z16, z_fast):.2%} equal, frames "
          f"{psnr(x16, x_fast):.1f} dB apart, reconstruction {psnr(x16, nxt):.3f} vs {psnr(x_fast, nxt):.3f} dB")
    assert agreement(z_fast, z_plain) >= 0.99 and agreement(fast[1], plain[1]) >= 0.99
    assert psnr(x_fast, x_plain) >= 60.0 and one_step_decodes_psnr(tok, fast) >= 60.0
    assert abs(psnr(x_fast, nxt) - psnr(x_plain, nxt)) < 0.01
    assert x16.dtype == torch.float32 and agreement(z16, z_fast) >= 0.95
    assert psnr(x16, x_fast) >= 45.0 and psnr(x16, nxt) >= psnr(x_fast, nxt) - 0.5


def test_training_is_unchanged(data, trained):
    """Under autograd the fast path is off (NHWC backward kernels are slower on CPU): same gradients."""
    tok, _ = trained
    prev, act, nxt = held_out(data, 8)
    tok.train()
    try:
        grads = []
        for plain in (False, True):
            with fastpath.plain() if plain else contextlib.nullcontext():
                tok.zero_grad()
                q = tok.quantize(prev, act, nxt)  # no codebook update: both passes see the same codes
                recon = tok.image(prev, act, tok.from_patches(q.q))
                ((recon - nxt).pow(2).mean() + q.commitment).backward()
                grads.append(torch.cat([p.grad.flatten() for p in tok.parameters() if p.grad is not None]))
    finally:
        tok.eval()
    assert torch.equal(grads[0], grads[1])


def test_the_fast_path_is_really_taken(trained):
    """On the fast path the first conv of every CNN of the dream sees channels-last input (the
    tokenizer's encoder, decoder and its frame CNN, the I-token CNN); on the plain path NCHW. Decoded
    frames come back in the usual NCHW layout either way."""
    tok, wm = trained
    convs = {"tok.encoder": tok.encoder.stem, "tok.frame_cnn": tok.frame_cnn.stem, "tok.decoder": tok.decoder.inp,
             "wm.frame_cnn": wm.frame_cnn.net.stem}
    seen: dict[str, list[bool]] = {name: [] for name in convs}
    hooks = [conv.register_forward_hook(
        lambda m, inputs, out, name=name: seen[name].append(inputs[0].is_contiguous(memory_format=torch.channels_last)))
        for name, conv in convs.items()]
    x, a = torch.rand(2, 3, 64, 64), torch.zeros(2, dtype=torch.long)
    try:
        with torch.inference_mode():
            outs = []
            for plain in (False, True):
                with fastpath.plain() if plain else contextlib.nullcontext():
                    outs.append(tok.decode(x, a, tok.encode(x, a, x)))
                    wm.embed_frames(x)
    finally:
        for h in hooks:
            h.remove()
    assert seen == {name: [True, False] for name in convs}
    assert all(o.is_contiguous() for o in outs)


def test_bf16_autocast_accuracy(data, trained):
    """bf16 changes the numbers; measured here against float32 on the trained model. bf16 keeps 8
    mantissa bits, a relative rounding of 2^-9 per op, so frame errors stay around 1e-3 (50-60 dB) and
    a token flips only where two codes are within ~1e-3 of each other. The bounds (95%, 45 dB, 0.5 dB)
    leave margin for that and still catch a path that casts the wrong thing (tokens, the code search)."""
    tok, _ = trained
    prev, act, nxt = held_out(data)
    with torch.inference_mode():
        z32 = tok.encode(prev, act, nxt)
        x32 = tok.decode(prev, act, z32)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            z16 = tok.encode(prev, act, nxt)
            x16 = tok.decode(prev, act, z32).float()
    print(f"\nbf16 vs float32: tokens {agreement(z16, z32):.2%} equal, frames {psnr(x16, x32):.1f} dB apart; "
          f"reconstruction {psnr(x16, nxt):.3f} vs {psnr(x32, nxt):.3f} dB")
    assert agreement(z16, z32) >= 0.95
    assert psnr(x16, x32) >= 45.0
    assert psnr(x16, nxt) >= psnr(x32, nxt) - 0.5
