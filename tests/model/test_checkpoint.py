"""Checkpoint folder: exact round trip, fp16 export, atomic replace, and clear errors on damage."""
import dataclasses
import errno
import json
import os
import subprocess
import sys

import pytest
import torch

from model.checkpoint import (CONFIG, MODEL_NAMES, STATE, WEIGHTS, CheckpointError, build_model,
                              checkpoint_exists, export_checkpoint, load_checkpoint, save_checkpoint)
from model.train.config_check import model_names, prepare_config
from model.train.phases import make_optimizer


class Evil:
    """An arbitrary object: loading it would need pickle code execution."""


@pytest.fixture
def setup(tiny_cfg):
    cfg = tiny_cfg
    cfg.env.name = "gridworld"
    cfg.train.baselines = True
    cfg = prepare_config(cfg)
    torch.manual_seed(0)
    models = {n: build_model(n, cfg) for n in model_names(cfg)}
    return cfg, models


def _state(models, cfg):
    """A real optimizer state after one step, plus counters."""
    tok = models["tokenizer"]
    opt = make_optimizer(tok, 1e-3, 0.01)
    x = torch.rand(2, 3, 64, 64)
    loss, _ = tok.compute_loss(x, torch.zeros(2, dtype=torch.long), x.flip(0))
    loss.backward()
    opt.step()
    return {"epoch": 3, "env_frames": 1234, "optimizers": {"tokenizer": opt.state_dict()}}


def test_round_trip_rebuilds_every_model_from_config(tmp_path, setup):
    cfg, models = setup
    state = _state(models, cfg)
    path = save_checkpoint(tmp_path / "ck", models, cfg, state)
    assert sorted(os.listdir(path)) == sorted([WEIGHTS, CONFIG, STATE])
    assert not [p for p in os.listdir(tmp_path) if p != "ck"], "temp folders left behind"
    ck = load_checkpoint(path)
    assert ck.cfg == cfg
    assert set(ck.models) == set(models) and set(models) <= set(MODEL_NAMES)
    for name, m in models.items():
        a, b = m.state_dict(), ck.models[name].state_dict()
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}.{k} changed"
    assert ck.state["epoch"] == 3 and ck.state["env_frames"] == 1234
    opt = make_optimizer(ck.models["tokenizer"], 1e-3, 0.01)
    opt.load_state_dict(ck.state["optimizers"]["tokenizer"])  # loads back into a rebuilt model
    step = next(iter(opt.state.values()))["step"]
    assert float(step) == 1.0
    # Only some models on request.
    assert set(load_checkpoint(path, names=("tokenizer",), with_state=False).models) == {"tokenizer"}


def test_half_export_is_smaller_and_loads_as_float32(tmp_path, setup):
    cfg, models = setup
    full = save_checkpoint(tmp_path / "full", models, cfg, _state(models, cfg))
    half = export_checkpoint(full, tmp_path / "half")  # what the bundled checkpoint is made with
    assert load_checkpoint(half).state == {"epoch": 3, "env_frames": 1234}  # no optimizer state
    assert (half / WEIGHTS).stat().st_size < 0.6 * (full / WEIGHTS).stat().st_size
    ck = load_checkpoint(half)
    for name, m in models.items():
        for k, v in m.state_dict().items():
            w = ck.models[name].state_dict()[k]
            assert w.dtype == v.dtype, f"{name}.{k} not cast back"
            if v.is_floating_point():
                assert torch.allclose(w, v, atol=1e-3, rtol=1e-3), f"{name}.{k} off by more than fp16 rounding"
            else:
                assert torch.equal(w, v)


def test_replacing_a_checkpoint_is_atomic(tmp_path, setup, monkeypatch):
    cfg, models = setup
    path = save_checkpoint(tmp_path / "last", models, cfg, {"epoch": 1})
    # A full disk in the middle of the next write leaves the old checkpoint whole and no temp folder.
    import safetensors.torch as st

    def full_disk(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(st, "save_file", full_disk)
    with pytest.raises(OSError):
        save_checkpoint(path, models, cfg, {"epoch": 2})
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["last"]
    assert load_checkpoint(path).state["epoch"] == 1
    # A writer SIGKILLed mid-write leaves a temp folder; the next save removes it.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / f".last.tmp-{dead.pid}").mkdir()
    save_checkpoint(path, models, cfg, {"epoch": 1})
    assert os.listdir(tmp_path) == ["last"]
    # A crash between moving the old checkpoint aside and renaming the new one in: the old one is restored.
    os.replace(path, tmp_path / ".last.old")
    assert checkpoint_exists(path)
    assert load_checkpoint(path).state["epoch"] == 1
    save_checkpoint(path, models, cfg, {"epoch": 2})
    assert load_checkpoint(path).state["epoch"] == 2 and os.listdir(tmp_path) == ["last"]


def test_truncated_weights_are_reported(tmp_path, setup):
    cfg, models = setup
    path = save_checkpoint(tmp_path / "ck", models, cfg, {})
    data = (path / WEIGHTS).read_bytes()
    (path / WEIGHTS).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=WEIGHTS):
        load_checkpoint(path)


def test_shape_mismatch_is_reported(tmp_path, setup):
    cfg, models = setup
    path = save_checkpoint(tmp_path / "ck", models, cfg, {})
    d = json.loads((path / CONFIG).read_text())
    d["world_model"]["embed_dim"] = 64  # the weights were trained at 32
    (path / CONFIG).write_text(json.dumps(d))
    with pytest.raises(CheckpointError, match=r"weights\.safetensors: world_model weights do not fit") as e:
        load_checkpoint(path)
    assert "size mismatch" in str(e.value)


def test_missing_or_broken_config_is_reported(tmp_path, setup):
    cfg, models = setup
    path = save_checkpoint(tmp_path / "ck", models, cfg, {})
    (path / CONFIG).write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json: not valid JSON"):
        load_checkpoint(path)
    (path / CONFIG).unlink()
    with pytest.raises(CheckpointError, match="config.json: missing"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "nowhere")


def test_state_is_loaded_without_pickle(tmp_path, setup):
    cfg, models = setup
    path = save_checkpoint(tmp_path / "ck", models, cfg, {})

    torch.save({"x": Evil()}, path / STATE)
    with pytest.raises(CheckpointError, match="state.pt"):
        load_checkpoint(path)


def test_play_only_export_leaves_out_the_ema_target_and_rebuilds_it(tmp_path, setup):
    """The bundle drops the actor-critic's EMA target (only training reads it): the file has no
    target weights, and loading starts the target from the online network."""
    from safetensors import safe_open

    cfg, models = setup
    with torch.no_grad():
        for p in models["actor_critic"].target.parameters():
            p.add_(1.0)  # a target that has drifted from the online network
    full = save_checkpoint(tmp_path / "full", models, cfg, {"epoch": 1})
    assert torch.equal(next(load_checkpoint(full).models["actor_critic"].target.parameters()),
                       next(models["actor_critic"].target.parameters()))  # a training checkpoint keeps it
    small = export_checkpoint(full, tmp_path / "small")
    with safe_open(str(small / WEIGHTS), "pt") as f:
        keys = list(f.keys())
    assert any(k.startswith("actor_critic.model.") for k in keys)
    assert not any(k.startswith("actor_critic.target.") for k in keys)
    ac = load_checkpoint(small).models["actor_critic"]
    for (k, t), s in zip(ac.target.state_dict().items(), ac.model.state_dict().values()):
        assert torch.equal(t, s), k
    kept = export_checkpoint(full, tmp_path / "kept", play_only=False)
    with safe_open(str(kept / WEIGHTS), "pt") as f:
        assert any(k.startswith("actor_critic.target.") for k in f.keys())


def test_a_checkpoint_of_another_design_is_refused_by_name(tmp_path, tiny_cfg):
    """Weights that do not fit the config's networks (here: a tokenizer without its per-action kernel
    table, as the first residual design wrote) give a CheckpointError naming the file, not a crash."""
    tiny_cfg.env.name = "gridworld"
    cfg = prepare_config(tiny_cfg)
    cfg.tokenizer = dataclasses.replace(cfg.tokenizer, decoder="residual")
    models = {n: build_model(n, cfg) for n in ("tokenizer", "world_model")}
    save_checkpoint(tmp_path / "old", models, cfg, {})
    from safetensors.torch import load_file, save_file

    w = load_file(str(tmp_path / "old" / WEIGHTS))
    save_file({k: v for k, v in w.items() if "action_kernels" not in k}, str(tmp_path / "old" / WEIGHTS))
    with pytest.raises(CheckpointError, match="tokenizer weights do not fit"):
        load_checkpoint(tmp_path / "old")

