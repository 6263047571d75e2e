"""Min-p sampling of the world model's tokens."""
import numpy as np
import pytest
import torch

import model.nets.world_model as world_model
from experiments.sampling.sampler import min_p_sampling, min_p_tokens


def test_min_p_keeps_exactly_the_tokens_above_its_cut_in_their_proportions():
    torch.manual_seed(0)
    probs = torch.tensor([0.5, 0.3, 0.12, 0.08])  # a cut at 0.2 * 0.5 = 0.1 drops the last token only
    logits = probs.log().expand(40_000, 4)
    drawn = np.bincount(min_p_tokens(logits, 1.0, 0.2).numpy(), minlength=4) / 40_000
    assert drawn[3] == 0
    kept = probs[:3] / probs[:3].sum()
    assert np.abs(drawn[:3] - kept.numpy()).max() < 0.01  # the rest sampled exactly, renormalised
    plain = np.bincount(min_p_tokens(logits, 1.0, 0.0).numpy(), minlength=4) / 40_000
    assert np.abs(plain - probs.numpy()).max() < 0.01  # 0: the product's sampling
    assert torch.equal(min_p_tokens(logits[:5], 1.0, 1.0), torch.zeros(5, dtype=torch.long))  # 1: greedy
    with pytest.raises(ValueError, match="min_p"):
        min_p_tokens(logits, 1.0, 1.5)


def test_the_swap_reaches_the_world_model_and_ends_with_the_block():
    plain = world_model.sample_tokens
    logits = torch.tensor([[2.0, 0.0, -1.0]]).expand(500, 3)
    with min_p_sampling(1.0):
        assert world_model.sample_tokens is not plain  # the name generate_step looks up
        assert (world_model.sample_tokens(logits, 1.0) == 0).all()
    assert world_model.sample_tokens is plain
    assert (plain(logits, 1.0) != 0).any()


def test_the_command_scores_each_value_on_a_short_walk(tmp_path, capsys):
    import json

    from experiments.sampling.cli import main

    out = tmp_path / "minp.json"
    assert main(["checkpoints/crafter", "--min-p", "0", "1", "--walks", "1", "--walk-steps", "6", "--json", str(out)]) == 0
    rows = capsys.readouterr().out.split("unknown tiles\n")[-1].strip().splitlines()  # the table after its header
    assert [row.split()[0] for row in rows] == ["0", "1"]
    assert set(json.loads(out.read_text())) == {"0.0", "1.0"}
