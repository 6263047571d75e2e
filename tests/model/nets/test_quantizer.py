import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from model.config import tiny
from model.nets.quantizer import FSQuantizer, Quantizer, batch_perplexity, codebook_usage
from model.nets.tokenizer import build_tokenizer


def _unit(n: int, d: int, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_ema_update_moves_used_codes_toward_their_inputs_and_keeps_unit_norm():
    torch.manual_seed(0)
    qz = Quantizer(input_dim=8, vocab_size=16, code_dim=8, ema_decay=0.9, revival="off")
    e = _unit(64, 8, seed=123)
    tokens = qz.nearest(e)
    before = qz.codebook.clone()
    qz.update_codebook(e, tokens)
    used = tokens.unique()
    for c in used.tolist():
        target = F.normalize(e[tokens == c].mean(0), dim=0)
        assert F.cosine_similarity(qz.codebook[c], target, dim=0) > F.cosine_similarity(before[c], target, dim=0)
    unused = torch.ones(16, dtype=torch.bool)
    unused[used] = False
    assert torch.equal(qz.codebook[unused], before[unused])
    assert torch.allclose(qz.codebook.norm(dim=-1), torch.ones(16), atol=1e-5)
    # usage EMA: used codes gain, unused codes decay
    assert (qz.usage[used] > 1 / 16 * 0.98 - 1e-9).all() and (qz.usage[unused] < 1 / 16).all()


def test_dead_codes_are_revived_from_current_inputs():
    qz = Quantizer(input_dim=8, vocab_size=32, code_dim=8, revival="always")
    qz.usage.zero_()
    qz.usage[0] = 1.0  # only code 0 alive
    e = _unit(8, 8, seed=1)
    revived = qz.update_codebook(e, torch.zeros(8, dtype=torch.long))
    assert revived == 8  # at most one per input
    replaced = [c for c in range(1, 32) if any(torch.allclose(qz.codebook[c], v, atol=1e-6) for v in e)]
    assert len(replaced) == 8
    assert torch.allclose(qz.usage[replaced], torch.full((8,), 1 / 32))


def test_low_entropy_policy_revives_only_when_usage_collapsed():
    qz = Quantizer(input_dim=8, vocab_size=32, code_dim=8, revival="low_entropy")
    e = _unit(32, 8, seed=2)
    # uniform usage -> entropy log2(32) = 5 bits >= 3: no revival even though no code is dead
    assert qz.update_codebook(e, torch.arange(32)) == 0
    qz.usage.zero_()
    qz.usage[3] = 1.0
    assert qz.entropy_bits() < 1
    assert qz.update_codebook(e, torch.full((32,), 3)) > 0


def test_collapsed_policy_revives_only_below_one_bit():
    """The published Crafter rule: a codebook spread over 8 codes (3 bits) keeps its dead codes, one
    that collapsed onto a single code (0 bits) gets them revived."""
    qz = Quantizer(input_dim=8, vocab_size=32, code_dim=8)
    assert qz.revival == "collapsed"
    e = _unit(32, 8, seed=3)
    qz.usage.zero_()
    qz.usage[:8] = 1 / 8
    assert qz.update_codebook(e, torch.arange(32) % 8) == 0
    qz.usage.zero_()
    qz.usage[3] = 1.0
    assert qz.update_codebook(e, torch.full((32,), 3)) > 0
    with pytest.raises(ValueError, match="revival"):
        Quantizer(input_dim=8, revival="sometimes")


def test_straight_through_gradient_reaches_the_input_and_projection():
    qz = Quantizer(input_dim=12, vocab_size=16, code_dim=4)
    z = torch.randn(5, 4, 12, requires_grad=True)
    out = qz(z, update=False)
    assert out.q.shape == (5, 4, 12) and out.tokens.shape == (5, 4) and out.tokens.dtype == torch.long
    (out.q.pow(2).sum() + out.commitment).backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert qz.proj_in.weight.grad.abs().sum() > 0 and qz.proj_out.weight.grad.abs().sum() > 0
    # the forward value is the code itself, not the input
    assert torch.allclose(out.q, qz.embed(out.tokens), atol=1e-5)


def test_forward_without_update_leaves_the_codebook_alone():
    qz = Quantizer(input_dim=6, vocab_size=8, code_dim=4, revival="always")
    before = (qz.codebook.clone(), qz.usage.clone())
    qz(torch.randn(10, 2, 6))
    assert torch.equal(qz.codebook, before[0]) and torch.equal(qz.usage, before[1])
    out = qz(torch.randn(10, 2, 6), update=True)
    assert not torch.equal(qz.usage, before[1]) and "codewords_revived" in out.metrics


def test_usage_counts_and_perplexity():
    tokens = torch.tensor([[0, 1], [0, 2], [3, 2]])
    u = codebook_usage(tokens, vocab_size=4)
    assert u.tolist() == [[2, 0, 0, 1], [0, 1, 2, 0]]
    assert (u > 0).sum(1).tolist() == [2, 2]
    assert math.isclose(batch_perplexity(torch.tensor([0, 1, 2, 3]), 8), 4.0, rel_tol=1e-5)
    assert math.isclose(batch_perplexity(torch.tensor([5, 5, 5]), 8), 1.0, rel_tol=1e-5)


def test_fsq_tokens_are_the_mixed_radix_index_of_the_rounded_grid_point():
    qz = FSQuantizer(input_dim=6, levels=(4, 4, 4, 4, 4))
    assert qz.vocab_size == 1024 and qz.codebook.shape == (1024, 5)
    z = torch.randn(64, 4, 6, requires_grad=True)
    out = qz(z * 20, update=True)
    assert out.tokens.shape == (64, 4) and 0 <= out.tokens.min() and out.tokens.max() < 1024
    # the decoder-side vector of a token is the same whether it comes from encoding or from the id
    assert torch.allclose(qz.embed(out.tokens), out.q, atol=1e-5)
    # every grid point is a distinct code, and ids round-trip through the grid
    assert torch.unique(qz.codebook, dim=0).shape[0] == 1024
    digits = ((qz.codebook + 1) / 2 * 3).round().long()
    assert torch.equal((digits * torch.tensor([1, 4, 16, 64, 256])).sum(-1), torch.arange(1024))
    # straight-through: the encoder gets a gradient, nothing commits, nothing is revived
    out.q.sum().backward()
    assert z.grad.abs().sum() > 0 and float(out.commitment) == 0 and out.metrics["codewords_revived"] == 0
    assert qz.num_updates == 1 and qz.entropy_bits() < 10


def test_fsq_levels_must_match_the_vocabulary():
    cfg = dataclasses.replace(tiny().tokenizer, quantizer="fsq", fsq_levels=(4, 4, 4))  # 64 codes
    assert build_tokenizer(cfg, 5).vocab_size == 64
    with pytest.raises(ValueError, match="give 27 codes, but vocab_size is 64"):
        build_tokenizer(dataclasses.replace(cfg, fsq_levels=(3, 3, 3)), 5)
    with pytest.raises(ValueError, match="unknown quantizer"):
        build_tokenizer(dataclasses.replace(cfg, quantizer="lfq"), 5)
