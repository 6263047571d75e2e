"""Closed-loop decoder tuning: only the decoder side moves, the closed-loop error falls, and
`python -m experiments.decoder_tuning.cli` writes a loadable checkpoint whose tokens (and world models) are unchanged."""
import json

import numpy as np
import pytest
import torch

from model.checkpoint import load_checkpoint, load_state
from model.config import tiny
from experiments.decoder_tuning.tune import closed_loop_errors, decoder_parameters, tune_decoder
from model.nets.tokenizer import build_tokenizer
from experiments.decoder_tuning.cli import main
from helpers import gridworld_episode, run_module

CLI = "experiments.decoder_tuning.cli"


def test_tuning_moves_only_the_decoder_and_lowers_the_closed_loop_error():
    torch.manual_seed(0)
    tok = build_tokenizer(tiny().tokenizer, 5)
    episodes = [gridworld_episode(seed) for seed in range(4)]
    names = {n for n, p in tok.named_parameters() if any(p is q for q in decoder_parameters(tok))}
    assert names and not any(n.startswith(("encoder", "quantizer")) for n in names)
    assert any(n.startswith("decoder") for n in names)
    before = {n: p.detach().clone() for n, p in tok.named_parameters()}
    frames = torch.rand(3, 3, 64, 64)
    tokens = tok.encode(frames, torch.tensor([0, 1, 2]), frames.flip(0))
    err0 = closed_loop_errors(tok, episodes, horizon=3, count=24, seed=1)
    assert err0.shape == (24, 3)
    facts = tune_decoder(tok, episodes, unroll=3, batch=4, lr=3e-3, steps=25, seed=0)
    err1 = closed_loop_errors(tok, episodes, horizon=3, count=24, seed=1)
    assert facts["steps"] == 25 and facts["unroll"] == 3
    assert err1[:, -1].mean() < 0.7 * err0[:, -1].mean()  # the third closed-loop step got much better
    moved = {n for n, p in tok.named_parameters() if not torch.equal(p, before[n])}
    assert moved and moved <= names  # the encoder side did not move
    assert torch.equal(tok.encode(frames, torch.tensor([0, 1, 2]), frames.flip(0)), tokens)  # tokens unchanged
    assert all(p.requires_grad for p in tok.parameters())  # the freeze is undone
    with pytest.raises(ValueError, match="steps, seconds"):
        tune_decoder(tok, episodes)


@pytest.mark.slow
def test_cli_writes_a_checkpoint_with_the_same_tokens(run_dir, tmp_path, capsys):
    src = run_dir / "checkpoints" / "last"
    out = tmp_path / "tuned"
    res = run_module(CLI, str(src), "--out", str(out), "--steps", "3", "--unroll", "2", "--batch", "2",
                     "--episodes", "2", "--episode-steps", "30", "--eval-episodes", "2", "--eval-windows", "4",
                     "--json", str(tmp_path / "facts.json"), "--quiet", "--no-half")
    assert res.returncode == 0, res.stderr
    old, new = load_checkpoint(src), load_checkpoint(out)
    assert new.cfg.to_dict() == old.cfg.to_dict()
    for name in old.models:  # every model travels; only the tokenizer's decoder side changed
        a, b = old.models[name].state_dict(), new.models[name].state_dict()
        changed = {k for k in a if not torch.equal(a[k], b[k])}
        if name == "tokenizer":
            assert changed and not any(k.startswith(("encoder", "quantizer")) for k in changed)
        else:
            assert not changed, (name, sorted(changed)[:3])
    facts = json.loads(load_state(out)["decoder_tuning"])
    assert facts["steps"] == 3 and set(facts["before"]) == {"psnr_step_1", "psnr_step_2", "psnr_step_5",
                                                             "psnr_step_10"}
    assert json.loads((tmp_path / "facts.json").read_text())["after"] == facts["after"]
    assert np.isfinite(list(facts["after"].values())).all()
    # A second run onto the same folder is refused without touching it.
    assert main([str(src), "--out", str(out), "--steps", "1"]) == 2
    assert "already exists" in capsys.readouterr().err


def test_encoder_mode_also_trains_the_encode_side():
    torch.manual_seed(0)
    tok = build_tokenizer(tiny().tokenizer, 5)
    episodes = [gridworld_episode(seed) for seed in range(4)]
    before = {n: p.detach().clone() for n, p in tok.named_parameters()}
    err0 = closed_loop_errors(tok, episodes, horizon=3, count=24, seed=1)
    facts = tune_decoder(tok, episodes, unroll=3, batch=4, lr=3e-3, steps=25, seed=0, encoder=True)
    err1 = closed_loop_errors(tok, episodes, horizon=3, count=24, seed=1)
    assert facts["encoder"] is True
    moved = {n for n, p in tok.named_parameters() if not torch.equal(p, before[n])}
    assert any(n.startswith("encoder") for n in moved) and any(n.startswith("decoder") for n in moved)
    assert err1[:, -1].mean() < 0.7 * err0[:, -1].mean()


@pytest.mark.slow
def test_cli_encoder_warns_that_the_world_models_are_stale(run_dir, tmp_path, capsys):
    src, out = run_dir / "checkpoints" / "last", tmp_path / "both"
    res = run_module(CLI, str(src), "--out", str(out), "--steps", "2", "--unroll", "2", "--batch", "2",
                     "--episodes", "2", "--episode-steps", "30", "--eval-episodes", "2", "--eval-windows", "4",
                     "--encoder", "--repeat", "0.75", "--quiet", "--no-half")
    assert res.returncode == 0, res.stderr
    assert "no longer match" in res.stderr
    a, b = load_checkpoint(src).models["tokenizer"].state_dict(), load_checkpoint(out).models["tokenizer"].state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a if k.startswith("encoder"))  # the encode side moved
    assert json.loads(load_state(out)["decoder_tuning"])["encoder"] is True
    assert main([str(src), "--out", str(tmp_path / "x"), "--repeat", "1"]) == 2


def test_strip_weights_mark_the_scrolled_in_strip_of_a_real_walk():
    from experiments.decoder_tuning.tune import unroll_strip_weights
    from model.config import EnvConfig
    from model.data.envs import action_names, make_env
    from model.data.frames import to_tensor
    from model.data.view_motion import key_motions

    env = make_env("crafter", seed=3)
    names = action_names("crafter")
    obs, _ = env.reset()
    frames, actions = [obs], []
    for key in ["move_left"] * 3 + ["move_up"] * 3:
        a = names.index(key)
        obs, *_ = env.step(a)
        frames.append(obs)
        actions.append(a)
    x = to_tensor(np.stack(frames))[None]
    act = torch.tensor([actions])
    view, moves = EnvConfig(name="crafter").scroll_view, torch.tensor(key_motions(names))
    assert unroll_strip_weights(x, act, 1.0, view, moves) is None
    w = unroll_strip_weights(x, act, 30.0, view, moves)
    assert w.shape == (1, 6, 1, 64, 64)
    assert set(w.unique().tolist()) <= {1.0, 30.0}
    strip = (w == 30.0).flatten(2).sum(-1)[0]
    assert (strip > 0).sum() >= 3  # most moves of the walk scrolled the view
    assert (strip <= view.tile * max(view.width, view.height)).all()  # one tile-wide strip at most
    with pytest.raises(ValueError, match="scrolling view"):
        tune_decoder(build_tokenizer(tiny().tokenizer, 17), [], steps=1, strip_weight=30.0)


def test_average_ends_the_tuning_on_the_weights_moving_average():
    episodes = [gridworld_episode(seed) for seed in range(2)]
    runs = []
    for average in (0.0, 0.5):
        torch.manual_seed(0)
        tok = build_tokenizer(tiny().tokenizer, 5)
        start = {n: p.detach().clone() for n, p in tok.named_parameters()}
        facts = tune_decoder(tok, episodes, unroll=2, batch=2, lr=3e-3, steps=3, seed=0, average=average)
        assert facts["average"] == average
        runs.append((start, {n: p.detach().clone() for n, p in tok.named_parameters()}))
    (start, last), (_, averaged) = runs
    moved = [n for n in last if not torch.equal(last[n], start[n])]
    assert moved
    # The average lies between where the decoder started and where its last step took it, on every moved weight.
    for n in moved:
        assert not torch.equal(averaged[n], last[n])
        lo, hi = torch.minimum(start[n], last[n]), torch.maximum(start[n], last[n])
        assert ((averaged[n] >= lo - 1e-3) & (averaged[n] <= hi + 1e-3)).float().mean() > 0.9


@pytest.mark.parametrize("decoder", ["residual", "paper"])
def test_a_grown_decoder_decodes_as_before_and_its_new_blocks_learn(decoder):
    import dataclasses

    from experiments.decoder_tuning.tune import grow_decoder

    torch.manual_seed(0)
    cfg = tiny()
    cfg = dataclasses.replace(cfg, tokenizer=dataclasses.replace(cfg.tokenizer, kind="delta", decoder=decoder))
    tok = build_tokenizer(cfg.tokenizer, cfg.env.num_actions).eval()
    grown, grown_cfg = grow_decoder(tok, cfg, 2)
    assert grown_cfg.tokenizer.decoder_extra_blocks == 2 and cfg.tokenizer.decoder_extra_blocks == 0
    assert sum(p.numel() for p in grown.parameters()) > sum(p.numel() for p in tok.parameters())
    grown.eval()
    prev, frames = torch.rand(3, 3, 64, 64), torch.rand(3, 3, 64, 64)
    actions = torch.tensor([0, 1, 2])
    tokens = tok.encode(prev, actions, frames)
    assert torch.equal(grown.encode(prev, actions, frames), tokens)
    assert torch.allclose(grown.decode(prev, actions, tokens), tok.decode(prev, actions, tokens), atol=1e-6)
    new = {n for n, _ in grown.named_parameters()} - {n for n, _ in tok.named_parameters()}
    assert new and all(n.startswith("decoder.levels.") for n in new)
    before = {n: p.detach().clone() for n, p in grown.named_parameters() if n in new}
    tune_decoder(grown, [gridworld_episode(seed) for seed in range(2)], unroll=2, batch=2, lr=3e-3, steps=3, seed=0)
    assert any(not torch.equal(p, before[n]) for n, p in grown.named_parameters() if n in new)
    with pytest.raises(ValueError, match="at least one"):
        grow_decoder(tok, cfg, 0)


@pytest.mark.slow
def test_cli_grow_writes_a_deeper_decoder_that_the_product_loads(run_dir, tmp_path):
    src, out = run_dir / "checkpoints" / "last", tmp_path / "grown"
    res = run_module(CLI, str(src), "--out", str(out), "--grow", "1", "--steps", "2", "--unroll", "2", "--batch", "2",
                     "--episodes", "2", "--episode-steps", "30", "--eval-episodes", "2", "--eval-windows", "4",
                     "--quiet", "--no-half")
    assert res.returncode == 0, res.stderr
    old, new = load_checkpoint(src), load_checkpoint(out)
    assert new.cfg.tokenizer.decoder_extra_blocks == old.cfg.tokenizer.decoder_extra_blocks + 1
    a, b = old.models["tokenizer"].state_dict(), new.models["tokenizer"].state_dict()
    assert set(a) < set(b)
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith(("encoder", "quantizer")))  # the same tokens
    assert json.loads(load_state(out)["decoder_tuning"])["grow"] == 1


def test_the_kept_grown_tokenizer_makes_the_bundles_tokens():
    """checkpoints/parts/crafter_grown_decoder is a start for world models on its frames only if its encode side is the bundle's, bit for bit."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    state = load_checkpoint(root / "checkpoints" / "parts" / "crafter_grown_decoder", names=("tokenizer",))
    bundle = load_checkpoint(root / "checkpoints" / "crafter", names=("tokenizer",))
    assert state.cfg.tokenizer.decoder_extra_blocks == 2 and bundle.cfg.tokenizer.decoder_extra_blocks == 0
    a, b = bundle.models["tokenizer"].state_dict(), state.models["tokenizer"].state_dict()
    encode_side = [k for k in a if k.startswith(("encoder", "quantizer"))]
    assert encode_side and all(torch.equal(a[k], b[k]) for k in encode_side)
    assert any(not torch.equal(a[k], b[k]) for k in a if k.startswith("decoder"))  # the tuned decoder differs
