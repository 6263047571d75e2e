"""Symlog two-hot: exact round trips, hand-checked bucket weights, a loss that regresses values."""
import math

import pytest
import torch

from model.nets.twohot import TwoHot, symexp, symlog


def test_symlog_symexp_are_inverse_and_odd():
    x = torch.tensor([-1e4, -3.5, -1.0, 0.0, 0.25, 1.0, 42.0, 1e5])
    assert torch.allclose(symexp(symlog(x)), x, rtol=1e-5)
    assert torch.allclose(symlog(-x), -symlog(x))
    assert symlog(torch.tensor(math.e - 1)).item() == pytest.approx(1.0, abs=1e-6)


def test_encode_by_hand():
    th = TwoHot(5, low=-2.0, high=2.0)  # buckets at -2, -1, 0, 1, 2 in symlog space
    assert th.buckets.tolist() == [-2.0, -1.0, 0.0, 1.0, 2.0]
    y = symexp(torch.tensor([0.25, -1.0, 0.0, 100.0, -100.0]))
    p = th.encode(y)
    expected = torch.tensor([
        [0, 0, 0.75, 0.25, 0],  # 0.25 between buckets 0 and 1
        [0, 1.0, 0, 0, 0],      # exactly on a bucket
        [0, 0, 1.0, 0, 0],
        [0, 0, 0, 0, 1.0],      # clamped to the top bucket
        [1.0, 0, 0, 0, 0],      # and to the bottom one
    ])
    assert torch.allclose(p, expected, atol=1e-6)
    assert torch.allclose(p.sum(-1), torch.ones(5))


def test_decode_inverts_encode_for_in_range_values():
    th = TwoHot(255)
    y = torch.tensor([[-30.0, -0.1, 0.0], [0.1, 1.0, 1234.5]])
    probs = th.encode(y)
    assert probs.shape == (2, 3, 255)
    # log of the target probabilities as logits: softmax gives them back, the mean is exact in symlog space
    decoded = th.decode(torch.log(probs.clamp_min(1e-30)))
    assert torch.allclose(decoded, y, rtol=1e-3, atol=1e-4)


def test_loss_regresses_a_value():
    torch.manual_seed(0)
    th = TwoHot(33)
    logits = torch.zeros(4, 33, requires_grad=True)
    target = torch.tensor([-5.0, 0.0, 0.3, 20.0])
    opt = torch.optim.Adam([logits], lr=0.3)
    first = th.loss(logits, target).item()
    for _ in range(120):
        loss = th.loss(logits, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first
    assert torch.allclose(th.decode(logits.detach()), target, rtol=0.05, atol=0.05)


def test_sign_classes_encode_the_sign_and_decode_the_expectation():
    from model.nets.twohot import SignClasses, reward_codec

    sc = reward_codec("sign", 255)
    assert isinstance(sc, SignClasses) and sc.num_buckets == 3
    p = sc.encode(torch.tensor([-1.0, 0.0, 0.3, 5.0]))
    assert p.tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1]]
    sure = torch.tensor([[9.0, -9.0, -9.0], [-9.0, 9.0, -9.0], [-9.0, -9.0, 9.0]])
    assert torch.allclose(sc.decode(sure), torch.tensor([-1.0, 0.0, 1.0]), atol=1e-6)
    assert sc.decode(torch.log(torch.tensor([0.2, 0.3, 0.5]))).item() == pytest.approx(0.3, abs=1e-6)
    with pytest.raises(ValueError, match="unknown reward encoding"):
        reward_codec("bogus", 3)
