"""The paint decoder starts as a copy of x_{t-1}, learns, and paints from the tokens alone."""
import dataclasses

import torch

from model.config import cpu
from model.nets.tokenizer import build_tokenizer


def _tokenizer(seed: int = 0):
    torch.manual_seed(seed)
    cfg = dataclasses.replace(cpu().tokenizer, decoder="paint", channels=8, frame_cnn_channels=8)
    return build_tokenizer(cfg, num_actions=5)


def test_starts_as_the_copy_of_the_previous_frame():
    tok = _tokenizer().eval()
    prev, frames = torch.rand(3, 3, 64, 64), torch.rand(3, 3, 64, 64)
    actions = torch.tensor([0, 1, 4])
    out, tokens = tok.reconstruct(prev, actions, frames)
    assert tokens.shape == (3, 4) and out.shape == (3, 3, 64, 64)
    assert (out - prev).abs().mean() < 0.01  # the mask starts on x_{t-1} (softmax weight ~0.99)


def test_the_decoder_only_moves_the_previous_frame_and_never_reads_it():
    """Masks, kernels and paint come from the tokens and the action alone, so the decoded frame is an affine
    function of x_{t-1}; the residual decoder, which reads x_{t-1}, is not."""
    prev1, prev2 = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    actions, tokens = torch.tensor([1, 3]), torch.tensor([[5, 900, 17, 300], [0, 1, 2, 3]])
    tok = _tokenizer().eval()
    assert not hasattr(tok, "frame_cnn") and tok.decoder.inp.in_channels == tok.cfg.latent_dim + tok.cfg.action_emb_dim
    dec = lambda t, p: t.decode(p, actions, tokens)  # noqa: E731
    gap = dec(tok, prev1) + dec(tok, prev2) - 2 * dec(tok, (prev1 + prev2) / 2)
    assert gap.abs().max() < 1e-5
    torch.manual_seed(0)
    residual = build_tokenizer(dataclasses.replace(tok.cfg, decoder="residual"), num_actions=5).eval()
    for p in residual.decoder.out[-1].parameters():  # the residual decoder starts as the copy: wake it up
        torch.nn.init.normal_(p, std=0.1)
    gap = dec(residual, prev1) + dec(residual, prev2) - 2 * dec(residual, (prev1 + prev2) / 2)
    assert gap.abs().max() > 1e-3


def test_a_few_steps_fit_a_scroll_better_than_the_copy():
    tok = _tokenizer(1).train()
    g = torch.Generator().manual_seed(0)
    prev = torch.rand(8, 3, 64, 64, generator=g)
    frames = torch.roll(prev, shifts=-7, dims=3)  # a one-tile scroll: the view moved left by 7 px ...
    frames[..., -7:] = torch.rand(8, 3, 64, 7, generator=g).round()  # ... and a new strip came in
    actions = torch.full((8,), 3)
    opt = torch.optim.Adam(tok.parameters(), lr=3e-3)
    copy_mse = (frames - prev).pow(2).mean().item()
    for _ in range(60):
        loss, metrics = tok.compute_loss(prev, actions, frames)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert metrics["mse"] < 0.5 * copy_mse, (metrics["mse"], copy_mse)
