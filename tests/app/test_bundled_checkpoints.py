"""Every checkpoint shipped under checkpoints/ loads from the file alone, has the shapes its config
promises, and dreams: the app's first minute depends on it."""
from __future__ import annotations

import math

import numpy as np
import pytest

from app.engine import BUNDLED_CHECKPOINT, ModelBundle, PlaySession
from model.checkpoint import checkpoint_exists, load_checkpoint

from helpers import REPO

ROOT = REPO / "checkpoints"
BUNDLES = sorted(p for p in ROOT.iterdir() if checkpoint_exists(p))


def test_the_crafter_bundle_is_shipped_and_is_the_default():
    assert BUNDLED_CHECKPOINT in BUNDLES
    assert {p.name for p in BUNDLES} >= {"crafter", "gridworld"}
    total = sum(f.stat().st_size for f in ROOT.rglob("*") if f.is_file())
    assert total <= 40 * 2**20, f"checkpoints/ is {total / 2**20:.1f} MiB, over the 40 MiB budget"


@pytest.mark.parametrize("path", BUNDLES, ids=lambda p: p.name)
def test_bundle_loads_with_its_config_and_shapes(path):
    ck = load_checkpoint(path, device="cpu", with_state=False)
    cfg = ck.cfg
    tok = ck.models["tokenizer"]
    assert cfg.env.name == path.name
    assert tok.tokens_per_frame == cfg.tokenizer.tokens_per_frame
    assert tok.vocab_size == cfg.tokenizer.vocab_size == math.prod(cfg.tokenizer.fsq_levels)
    assert ck.models["world_model"].layout == "delta"
    assert "actor_critic" in ck.models
    if path.name == "crafter":  # the comparison views need every variant
        assert {"world_model_no_itok", "iris_tokenizer"} <= set(ck.models)
        iris = ck.models["iris_tokenizer"]
        assert iris.tokens_per_frame == 16
        # The Δ code spends fewer bits per frame than the IRIS-style one it is compared with.
        assert tok.bits_per_frame < iris.bits_per_frame


@pytest.mark.parametrize("path", BUNDLES, ids=lambda p: p.name)
def test_bundle_dreams_a_few_steps(path):
    bundle = ModelBundle.load(path, device="cpu")
    s = PlaySession(bundle, shadow=True, seed=0)
    info = s.reset(seed=123)
    frames = [info.dream_frame]
    for a in (1, 2, 3, 4, 0):
        info = s.step(a)
        frames.append(info.dream_frame)
        assert info.dream_frame.shape == (64, 64, 3) and info.dream_frame.dtype == np.uint8
        assert np.isfinite(info.reward) and 0.0 <= info.end_prob <= 1.0
        assert info.pixel_error is not None
    assert any(not np.array_equal(frames[0], f) for f in frames[1:]), "the dream never changed"
    if s.available_variants.get("no_i_tokens"):
        s.set_i_tokens(False)
        assert s.step(0).dream_frame.shape == (64, 64, 3)
