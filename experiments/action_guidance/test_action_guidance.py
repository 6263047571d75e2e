"""Action guidance of the dream's tokens."""
import pytest
import torch

from experiments.action_guidance.guidance import action_guidance, guided_logits, guided_step
from model.nets.world_model import WorldModel


def test_guided_logits_weigh_the_difference_and_keep_equal_predictions():
    a, b = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([[0.0, 0.0, 0.0]])
    assert torch.allclose(guided_logits(a, b, 0.0), a.log_softmax(-1))
    assert torch.allclose(guided_logits(a, a, 3.0), a.log_softmax(-1))  # nothing to weigh
    g = guided_logits(a, b, 1.0)
    assert (g[0, 0] - g[0, 2]) == pytest.approx(2 * (3.0 - 0.0))  # the gap to the flat contrast, doubled


@pytest.fixture(scope="module")
def dream():
    """The Crafter bundle's I-token world model primed on the first frame of a real episode."""
    from app.bundle import ModelBundle
    from app.engine import PlaySession

    torch.manual_seed(0)
    session = PlaySession(ModelBundle.load("checkpoints/crafter", device="cpu"), shadow=False, seed=10000,
                          i_tokens=True)
    session.reset(10000)
    for k in ("move_left", "move_up"):
        session.step(session.action_names.index(k))
    yield session._dream  # the DreamEnv, batch 1
    session.close()


def _copy(wm, cache):
    wm.settle(cache)
    return cache.repeat(1)


def test_a_guided_step_samples_from_the_guided_logits_and_keeps_the_actions_own_stream(dream):
    wm, x = dream.world_model, dream.frame
    move, noop = torch.tensor([1]), 0
    with torch.inference_mode():
        guided = _copy(wm, dream.cache)
        tokens, _, _ = guided_step(wm, WorldModel.generate_step, guided, x, move, 0.0, 50.0, noop)  # greedy
        plain, contrast = _copy(wm, dream.cache), _copy(wm, dream.cache)
        WorldModel.generate_step(wm, plain, x, move, 0.0, tokens=tokens)  # the same tokens, each action alone
        WorldModel.generate_step(wm, contrast, x, torch.tensor([noop]), 0.0, tokens=tokens)
    want = guided_logits(plain.last.token_logits[0, 0], contrast.last.token_logits[0, 0], 50.0).argmax(-1)
    assert torch.equal(tokens[0], want)
    assert guided.length == plain.length and guided.batch == 1 and guided.k[0].size(0) == 1
    assert torch.allclose(guided.last.token_logits, plain.last.token_logits, atol=1e-4)
    for kg, kp in zip(guided.k, plain.k):
        assert torch.allclose(kg[:, :, :guided.length], kp[:, :, :plain.length], atol=1e-4)
    assert torch.allclose(guided.pending, plain.pending)


def test_the_swap_reaches_the_product_dream_and_ends_with_the_block(dream):
    plain = WorldModel.generate_step
    with action_guidance(1.0):
        assert WorldModel.generate_step is not plain
        tokens, _, _ = dream.world_model.generate_step(_copy(dream.world_model, dream.cache), dream.frame,
                                                       torch.tensor([2]))
        assert tokens.shape == (1, dream.world_model.tokens_per_frame)
    assert WorldModel.generate_step is plain


def test_the_command_scores_each_weight_and_refuses_an_unknown_contrast(tmp_path, capsys):
    import json

    from experiments.action_guidance.cli import main

    out = tmp_path / "g.json"
    assert main(["checkpoints/crafter", "--weight", "0", "1", "--walks", "1", "--walk-steps", "6",
                 "--json", str(out)]) == 0
    rows = capsys.readouterr().out.split("keys without I-tokens\n")[-1].strip().splitlines()
    assert [row.split()[0] for row in rows] == ["0", "1"]
    assert set(json.loads(out.read_text())) == {"0.0", "1.0"}
    assert main(["checkpoints/crafter", "--contrast", "fly"]) == 2
    assert "not an action" in capsys.readouterr().err
