"""Training loop end to end at the tiny preset (GridWorld, real envs and models), the CLI's one-line
errors, and the run-folder helpers (lock, metrics)."""
import errno
import json
import os
import subprocess
import sys

import imageio.v3 as iio
import pytest
import torch

from app.cli import main
from model.checkpoint import load_checkpoint
from model.train.run_dir import MetricsWriter, RunLock, RunLockedError, read_metrics
from model.train.config_check import ConfigError, prepare_config
from model.train.loop import train
from model.train.schedule import collection_target


def quick(cfg):
    """The tiny preset cut to the bone: one short epoch of each phase."""
    cfg.env.name = "gridworld"
    t = cfg.train
    t.initial_random_frames, t.total_frames, t.test_episodes = 200, 10_000, 1
    t.first_epoch_tokenizer_steps = t.first_epoch_world_model_steps = t.first_epoch_actor_critic_steps = 2
    return cfg


def _run(cfg, path, **kw):
    torch.set_num_threads(1)
    return train(cfg, path, max_epochs=1, console=False, **kw)


def test_iris_tokenizer_trains_end_to_end(tmp_path, tiny_cfg):
    cfg = quick(tiny_cfg)
    cfg.tokenizer.kind = "iris"
    out = _run(cfg, tmp_path / "run")
    assert out["status"] == "finished" and out["epoch"] == 1
    (rec,) = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert rec["epoch"] == 1 and rec["env_frames"] == out["env_frames"] > 0
    for key in ("tokenizer/psnr", "world_model/token_acc", "actor_critic/loss", "return_mean", "codebook_usage",
                "recon_psnr", "token_accuracy", "fps"):
        assert key in rec, key
    ck = load_checkpoint(tmp_path / "run" / "checkpoints" / "last")
    assert ck.models["tokenizer"].kind == "iris" and ck.cfg.tokenizer.tokens_per_frame == 16
    assert ck.models["world_model"].layout == "iris"
    assert ck.state["epoch"] == 1 and ck.state["env_frames"] == out["env_frames"]
    media = tmp_path / "run" / "media"
    assert iio.imread(media / "recon_epoch_0001.png").shape[0] == 2 * 64  # real row over recon row
    gif = media / "dream_epoch_0001.gif"
    assert iio.immeta(gif, index=0)["loop"] == 0 and iio.immeta(gif, index=0)["duration"] == 100
    assert json.loads((tmp_path / "run" / "config.json").read_text())["tokenizer"]["kind"] == "iris"


def test_no_i_tokens_trains_end_to_end(tmp_path, tiny_cfg):
    cfg = quick(tiny_cfg)
    cfg.world_model.i_tokens = False
    events = []
    out = _run(cfg, tmp_path / "run", progress=events.append)
    assert out["status"] == "finished"
    ck = load_checkpoint(tmp_path / "run" / "checkpoints" / "last")
    wm = ck.models["world_model"]
    assert not wm.i_tokens and wm.tokens_per_step == 5
    assert not any(k.startswith("frame_cnn") for k in wm.state_dict())
    phases = [e["phase"] for e in events]
    for p in ("collect", "tokenizer", "world_model", "actor_critic", "evaluate", "done"):
        assert p in phases, p
    steps = [e for e in events if e["phase"] == "tokenizer"]
    assert steps[-1]["step"] == steps[-1]["steps"] == 2 and "loss" in steps[-1]


def test_baselines_train_on_the_same_batches(tmp_path, tiny_cfg):
    cfg = quick(tiny_cfg)
    cfg.train.baselines = True
    cfg.train.eval_every = 5  # no evaluation this epoch
    _run(cfg, tmp_path / "run")
    ck = load_checkpoint(tmp_path / "run" / "checkpoints" / "last")
    assert set(ck.models) == {"tokenizer", "world_model", "actor_critic", "world_model_no_itok", "iris_tokenizer"}
    assert ck.models["iris_tokenizer"].tokens_per_frame == 16 and not ck.models["world_model_no_itok"].i_tokens
    (rec,) = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert "iris_tokenizer/psnr" in rec and "world_model_no_itok/loss" in rec and "return_mean" not in rec
    assert set(ck.state["optimizers"]) == set(ck.models)


def test_stop_request_keeps_a_checkpoint(tmp_path, tiny_cfg):
    cfg = quick(tiny_cfg)
    seen = []

    def stop():  # stop once the tokenizer has taken a step
        return any(e["phase"] == "tokenizer" for e in seen)

    out = _run(cfg, tmp_path / "run", progress=seen.append, stop=stop)
    assert out["status"] == "stopped" and out["epoch"] == 0
    ck = load_checkpoint(tmp_path / "run" / "checkpoints" / "last")
    assert ck.state["epoch"] == 0 and ck.state["env_frames"] == out["env_frames"] > 0
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
    assert not (tmp_path / "run" / ".lock").exists()


def test_collection_schedule():
    from model.config import tiny

    cfg = tiny()
    assert [collection_target(cfg, e) for e in (1, 2, 3, 4)] == [300, 400, 500, 600]  # capped at total_frames
    assert collection_target(cfg, 9) == 600


# ------------------------------------------------------------------------------------ bad input

def _cli(args, capsys):
    code = main(["train", "--quiet", *args])
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.mark.parametrize("args, message", [
    (["--env", "doom"], "unknown env 'doom'"),
    (["--preset", "huge"], "unknown preset 'huge'"),
    (["--tokenizer", "vqgan"], "unknown tokenizer"),
    (["--set", "world_model.num_heads=3"], "must be divisible by num_heads"),
    (["--set", "train.world_model_seq=50"], "world_model_seq (50) must be in 2..world_model.max_steps"),
    (["--set", "nope.x=1"], "unknown config section"),
    (["--baselines", "--no-i-tokens"], "baselines"),
    (["--device", "cuda:7"], "CUDA is not available"),
    (["--resume"], "nothing to resume"),
])
def test_bad_input_is_one_line(tmp_path, capsys, args, message):
    if "--device" in args and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    run = tmp_path / "run"
    code, err = _cli(["--env", "gridworld", "--preset", "tiny", "--run-dir", str(run), *args], capsys)
    assert code == 2
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err, err
    assert not run.exists(), "nothing may be written for a refused run"


def test_unusable_run_dir_and_existing_run(tmp_path, capsys, tiny_cfg):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, err = _cli(["--env", "gridworld", "--preset", "tiny", "--run-dir", str(blocker / "run")], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "cannot use" in err, err
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(prepare_config(quick(tiny_cfg)).to_json())
    code, err = _cli(["--env", "gridworld", "--preset", "tiny", "--run-dir", str(run)], capsys)
    assert code == 2 and "already holds a run" in err and "--resume" in err


def test_full_disk_is_one_line(tmp_path, capsys, monkeypatch):
    import model.train.loop as trainer

    def full_disk(*a, **k):  # what the OS raises when the disk fills during the checkpoint write
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run" / "checkpoints"))

    monkeypatch.setattr(trainer, "save_checkpoint", full_disk)
    code, err = _cli(["--env", "gridworld", "--preset", "tiny", "--epochs", "1", "--run-dir", str(tmp_path / "run"),
                      "--set", "train.initial_random_frames=60", "--set", "train.eval_every=9",
                      "--set", "train.first_epoch_tokenizer_steps=1", "--set", "train.first_epoch_world_model_steps=1",
                      "--set", "train.first_epoch_actor_critic_steps=1"], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "no space left" in err, err
    assert not (tmp_path / "run" / ".lock").exists()


def test_motion_input_and_strip_weight_train_on_crafter_and_are_refused_without_a_scrolling_view(tmp_path, tiny_cfg):
    cfg = quick(tiny_cfg)
    cfg.env.name = "crafter"
    cfg.world_model.motion_input = True
    cfg.tokenizer.strip_weight = 10.0
    cfg.train.test_episodes = 0
    assert _run(cfg, tmp_path / "run")["status"] == "finished"
    (rec,) = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert rec["world_model/loss_motion"] > 0 and 0 <= rec["world_model/motion_acc"] <= 1
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last").models["world_model"].motion
    cfg.env.name = "gridworld"
    with pytest.raises(ConfigError, match="motion_input reads a scrolling view"):
        prepare_config(cfg)
    cfg.world_model.motion_input = False
    with pytest.raises(ConfigError, match="strip_weight weighs the strip"):
        prepare_config(cfg)


def test_prepare_config_rejects_unknown_env(tiny_cfg):
    tiny_cfg.env.name = "atari:"
    with pytest.raises(ConfigError, match="atari needs a game name"):
        prepare_config(tiny_cfg)


def test_prepare_config_rejects_an_unknown_reward_encoding(tiny_cfg):
    tiny_cfg.world_model.reward_encoding = "cubic"
    with pytest.raises(ConfigError, match="world_model.reward_encoding must be one of twohot, sign"):
        prepare_config(tiny_cfg)


def test_prepare_config_rejects_a_negative_decoder_depth(tiny_cfg):
    tiny_cfg.tokenizer.decoder_extra_blocks = -1
    with pytest.raises(ConfigError, match="tokenizer.decoder_extra_blocks must be 0 or more, got -1"):
        prepare_config(tiny_cfg)


# ---------------------------------------------------------------------------------- run folder

def test_lock_refuses_a_live_owner_and_takes_over_a_dead_one(tmp_path):
    import socket

    lock_path = tmp_path / ".lock"
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock_path.write_text(f"{live.pid}@{socket.gethostname()}")
        with pytest.raises(RunLockedError, match=str(live.pid)):
            RunLock(lock_path).acquire()
    finally:
        live.kill()
        live.wait()
    # The owner is gone (SIGKILLed trainer): the stale lock is taken over.
    with RunLock(lock_path):
        assert lock_path.read_text().startswith(f"{os.getpid()}@")
    assert not lock_path.exists()


def test_metrics_skip_torn_lines_and_truncate_on_resume(tmp_path):
    path = tmp_path / "metrics.jsonl"
    w = MetricsWriter(path)
    w.write({"epoch": 1, "loss": torch.tensor(0.5), "nan": float("nan")})
    w.write({"epoch": 2})
    with open(path, "a") as f:
        f.write('{"epoch": 3, "lo')  # a writer killed mid-line
    assert [r["epoch"] for r in read_metrics(path)] == [1, 2]
    assert read_metrics(path)[0]["loss"] == 0.5 and read_metrics(path)[0]["nan"] is None
    w.write({"epoch": 3})
    assert [r["epoch"] for r in read_metrics(path)] == [1, 2, 3]
    w.truncate_after(1)
    assert [r["epoch"] for r in read_metrics(path)] == [1]


def test_resume_accepts_the_runs_own_settings_and_refuses_new_networks(tmp_path, tiny_cfg):
    import argparse

    from app import train_cmd
    from app.cli import UserError

    cfg = quick(tiny_cfg)
    cfg.tokenizer.kind = "iris"
    (tmp_path / "config.json").write_text(prepare_config(cfg).to_json())
    parser = argparse.ArgumentParser()
    train_cmd.add_arguments(parser)

    def resume(*extra):
        return train_cmd.resume_config(parser.parse_args(["--resume", *extra]), tmp_path)

    # What the web UI resends on resume: the same env/preset/tokenizer, plus a schedule change.
    got = resume("--env", "GridWorld", "--preset", "tiny", "--set", "tokenizer.kind=iris", "--frames", "999",
                 "--set", "train.lr=0.01")
    assert got.train.total_frames == 999 and got.train.lr == 0.01 and got.tokenizer.tokens_per_frame == 16
    for extra, message in ((["--set", "world_model.embed_dim=64"], "only train.* and device"),
                           (["--env", "crafter"], "does not match"),
                           (["--no-i-tokens"], "does not match"),
                           (["--baselines"], "cannot be added")):
        with pytest.raises(UserError, match=message):
            resume(*extra)


def test_time_budget_ends_on_an_epoch_boundary(tmp_path, tiny_cfg):
    """`--minutes`: epochs run while the next one is expected to fit; the run ends finished, on a
    boundary, with the checkpoint of its last whole epoch (not stopped mid-epoch)."""
    cfg = quick(tiny_cfg)
    cfg.train.eval_every = 100
    torch.set_num_threads(1)
    out = train(cfg, tmp_path / "run", console=False, max_seconds=1e-3)  # the first epoch always runs
    assert out["status"] == "finished" and out["epoch"] == 1
    out = train(cfg, tmp_path / "run", resume=True, console=False, max_seconds=3600, max_epochs=3)
    assert out["status"] == "finished" and out["epoch"] == 3
    assert [r["epoch"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")] == [1, 2, 3]
    assert "the next epoch would not fit" in (tmp_path / "run" / "train.log").read_text()


def test_init_starts_a_model_from_another_checkpoint(tmp_path, tiny_cfg, capsys):
    """`--init tokenizer=FOLDER`: the new run's tokenizer begins as the stored one (it then trains on), the
    other models start fresh, the config records the source, and a model that does not fit is refused."""
    from model.checkpoint import CheckpointError, build_model, load_init_weights, split_init_spec

    assert split_init_spec("runs/tok/iris:tokenizer") == ("runs/tok/iris", "tokenizer")
    assert split_init_spec("C:/runs/tok") == ("C:/runs/tok", None)  # a colon above the last part is a path

    src = tmp_path / "src"
    _run(quick(tiny_cfg), src)
    stored = load_checkpoint(src / "checkpoints" / "last").models["tokenizer"].state_dict()

    cfg = quick(tiny_cfg)
    cfg.train.init = {"tokenizer": str(src / "checkpoints" / "last")}
    cfg.train.first_epoch_tokenizer_steps = 0  # nothing trains it: it must still equal the stored one
    _run(cfg, tmp_path / "warm")
    ck = load_checkpoint(tmp_path / "warm" / "checkpoints" / "last")
    got = ck.models["tokenizer"].state_dict()
    assert all(torch.equal(got[k], stored[k]) for k in stored)
    assert ck.cfg.train.init == cfg.train.init
    assert "warm start: tokenizer starts from" in (tmp_path / "warm" / "train.log").read_text()

    other = quick(tiny_cfg)
    other.tokenizer.channels = 4  # other shapes
    other = prepare_config(other)
    with pytest.raises(CheckpointError, match="does not fit this run's tokenizer"):
        load_init_weights("tokenizer", str(src / "checkpoints" / "last"), other, build_model("tokenizer", other))
    with pytest.raises(ConfigError, match="train.init names critic"):
        prepare_config(quick(tiny_cfg).override("train.init", '{"critic": "x"}'))
    code, err = _cli(["--env", "gridworld", "--preset", "tiny", "--run-dir", str(tmp_path / "r"),
                      "--init", f"tokenizer={tmp_path / 'nowhere'}"], capsys)
    assert code == 2 and "no such checkpoint folder" in err and len(err.splitlines()) == 1


def test_closed_loop_pairs_chain_the_tokenizers_own_frames(tiny_cfg):
    from types import SimpleNamespace

    from model.checkpoint import build_model
    from model.train.phases import Phases

    torch.manual_seed(0)
    tiny_cfg.train.autocast = "off"  # the reference below runs in float32
    tok = build_model("tokenizer", tiny_cfg).eval()
    phases = Phases(tiny_cfg, {"tokenizer": tok}, {}, {}, None, SimpleNamespace(device=torch.device("cpu")),
                    emit=lambda *a, **k: None, should_stop=lambda: False)
    frames, actions = torch.rand(4, 4, 3, 64, 64), torch.randint(0, 5, (4, 4))
    mask = torch.ones(4, 4, dtype=torch.bool)
    mask[1, 1] = False  # segment 1: an episode ends after its second frame
    out = phases._closed_loop(frames, actions, mask, share=0.5)
    assert torch.equal(out[2:], frames[2:]) and torch.equal(out[:, 0], frames[:, 0])  # the other half: real
    x1 = tok.decode(frames[:1, 0], actions[:1, 0], tok.encode(frames[:1, 0], actions[:1, 0], frames[:1, 1]))
    x2 = tok.decode(x1, actions[:1, 1], tok.encode(x1, actions[:1, 1], frames[:1, 2]))
    assert torch.allclose(out[0, 1], x1[0], atol=1e-4) and torch.allclose(out[0, 2], x2[0], atol=1e-3)  # batch 2 vs 1
    assert torch.equal(out[1, 2], frames[1, 2])  # the chain restarts from the real frame after an end
    assert not torch.equal(out[1, 3], frames[1, 3])
    assert phases._closed_loop(frames, actions, mask, share=0.0) is frames
    real = phases._closed_loop(frames, actions, mask, share=0.5, real_tokens=True)  # the real pairs' tokens
    y2 = tok.decode(x1, actions[:1, 1], tok.encode(frames[:1, 1], actions[:1, 1], frames[:1, 2]))
    assert torch.allclose(real[0, 1], x1[0], atol=1e-4) and torch.allclose(real[0, 2], y2[0], atol=1e-3)
    assert not torch.allclose(y2, x2, atol=1e-3)


def test_real_token_closed_loop_pairs_encode_the_real_pair_and_decode_from_the_chain(tiny_cfg, monkeypatch):
    from types import SimpleNamespace

    import model.train.phases as ph
    from model.checkpoint import build_model

    torch.manual_seed(0)
    tiny_cfg.train.autocast = "off"
    tiny_cfg.train.tokenizer_closed_loop, tiny_cfg.train.tokenizer_closed_loop_tokens = 1.0, "real"
    tiny_cfg.train.tokenizer_batch, tiny_cfg.train.tokenizer_seq = 2, 4
    tok = build_model("tokenizer", tiny_cfg).eval()
    frames, actions = torch.rand(2, 4, 3, 64, 64), torch.randint(0, 5, (2, 4))
    batch = SimpleNamespace(frames=frames, actions=actions, action_mask=torch.ones(2, 4, dtype=torch.bool))
    sampler = SimpleNamespace(sample=lambda n: batch)
    monkeypatch.setattr(ph, "to_torch", lambda raw, device: raw)  # the batch is already tensors
    phases = ph.Phases(tiny_cfg, {"tokenizer": tok}, {}, {"tokenizer": sampler}, None,
                       SimpleNamespace(device=torch.device("cpu"), share=lambda n: n),
                       emit=lambda *a, **k: None, should_stop=lambda: False)
    pairs = phases.pairs()
    assert torch.equal(pairs.prev, frames[:, :-1][torch.ones(2, 3, dtype=torch.bool)])  # the encoder reads real pairs
    chained = phases._closed_loop(frames, actions, batch.action_mask, 1.0, real_tokens=True)
    assert torch.allclose(pairs.decoder_prev, chained[:, :-1].flatten(0, 1), atol=1e-5)
    assert not torch.allclose(pairs.decoder_prev, pairs.prev, atol=1e-3)
    tok.train()
    loss, _ = tok.compute_loss(pairs.prev, pairs.actions, pairs.next, decoder_prev=pairs.decoder_prev)
    plain, _ = tok.compute_loss(pairs.prev, pairs.actions, pairs.next)
    assert torch.isfinite(loss) and not torch.allclose(loss, plain)  # the decoder rebuilt from the chain


def test_world_model_closed_loop_shows_the_i_tokens_the_decoders_own_frames(tiny_cfg, monkeypatch):
    from types import SimpleNamespace

    import model.train.phases as ph
    from model.checkpoint import build_model

    torch.manual_seed(0)
    tiny_cfg.env.name = "gridworld"
    tiny_cfg.train.autocast = "off"
    tiny_cfg.train.world_model_closed_loop = 0.5
    tok, wm = build_model("tokenizer", tiny_cfg).eval(), build_model("world_model", tiny_cfg)
    frames, actions = torch.rand(2, 5, 3, 64, 64), torch.randint(0, 5, (2, 5))
    k = tiny_cfg.tokenizer.tokens_per_frame
    tokens = torch.randint(0, tiny_cfg.tokenizer.vocab_size, (2, 4, k))  # as the token cache gives them
    ones = torch.ones(2, 5, dtype=torch.bool)
    batch = SimpleNamespace(frames=frames, actions=actions, action_mask=ones, rewards=torch.zeros(2, 5),
                            ends=torch.zeros(2, 5, dtype=torch.long))
    monkeypatch.setattr(ph, "to_torch", lambda raw, device: raw)
    phases = ph.Phases(tiny_cfg, {"tokenizer": tok, "world_model": wm}, {},
                       {"world_model": SimpleNamespace(sample=lambda n: batch)}, None,
                       SimpleNamespace(device=torch.device("cpu"), share=lambda n: n),
                       emit=lambda *a, **k: None, should_stop=lambda: False)
    phases.token_cache = SimpleNamespace(tokens=lambda raw, f, encode: tokens)
    seen, acts, got, *_ = phases._world_model_batch()
    assert got is tokens and torch.equal(acts, actions[:, :-1])  # the targets stay the real pairs' tokens
    assert torch.equal(seen[1], frames[1, :-1]) and torch.equal(seen[0, 0], frames[0, 0])  # half: real frames
    with torch.no_grad():
        x1 = tok.decode(frames[:1, 0], actions[:1, 0], tokens[:1, 0])
        x2 = tok.decode(x1, actions[:1, 1], tokens[:1, 1])
    assert torch.allclose(seen[0, 1], x1[0].clamp(0, 1), atol=1e-5)
    assert torch.allclose(seen[0, 2], x2[0].clamp(0, 1), atol=1e-5)  # chained from its own output
    tiny_cfg.train.world_model_closed_loop = 0.0
    assert torch.equal(phases._world_model_batch()[0], frames[:, :-1])


def test_world_model_closed_loop_trains_end_to_end(tmp_path, tiny_cfg):
    cfg = quick(tiny_cfg)
    cfg.train.world_model_closed_loop = 1.0
    assert _run(cfg, tmp_path / "run")["status"] == "finished"
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last").cfg.train.world_model_closed_loop == 1.0
    with pytest.raises(ConfigError, match="world_model_closed_loop"):
        prepare_config(quick(tiny_cfg).override("train.world_model_closed_loop", "2"))


def test_weight_average_is_the_ema_of_the_iterates_and_the_model_takes_it_when_the_phase_ends(tiny_cfg, monkeypatch):
    from types import SimpleNamespace

    import model.train.phases as ph
    from model.checkpoint import build_model
    from model.train.averaging import WeightAverage

    torch.manual_seed(0)
    tiny_cfg.train.autocast = "off"
    tiny_cfg.train.weight_average, tiny_cfg.train.first_epoch_tokenizer_steps = 0.5, 3
    tok = build_model("tokenizer", tiny_cfg).eval()
    opt = ph.make_optimizer(tok, 1e-2, 0.0)
    frames, actions = torch.rand(2, 3, 3, 64, 64), torch.randint(0, 5, (2, 3))
    batch = SimpleNamespace(frames=frames, actions=actions, action_mask=torch.ones(2, 3, dtype=torch.bool))
    monkeypatch.setattr(ph, "to_torch", lambda raw, device: raw)  # the batch is already tensors
    phases = ph.Phases(tiny_cfg, {"tokenizer": tok}, {"tokenizer": opt}, {"tokenizer": SimpleNamespace(sample=lambda n: batch)},
                       None, SimpleNamespace(device=torch.device("cpu"), share=lambda n: n, average_grads=lambda p: None,
                                             broadcast_module=lambda m, buffers_only=False: None),
                       emit=lambda *a, **k: None, should_stop=lambda: False)
    name = next(n for n, p in tok.named_parameters() if p.dim() >= 2)
    expected = dict(tok.named_parameters())[name].detach().clone()
    iterates, step = [], opt.step

    def recorded_step(*a, **k):
        out = step(*a, **k)
        iterates.append(dict(tok.named_parameters())[name].detach().clone())
        return out

    monkeypatch.setattr(opt, "step", recorded_step)
    phases.tokenizer(1)
    assert len(iterates) == 3 and not torch.allclose(iterates[-1], iterates[0])
    for w in iterates:
        expected = 0.5 * expected + 0.5 * w
    assert torch.allclose(dict(tok.named_parameters())[name], expected, atol=1e-6)  # the average, not the last
    assert not torch.allclose(expected, iterates[-1], atol=1e-6)
    saved = WeightAverage(tok, 0.5).state_dict()
    fresh = WeightAverage(build_model("tokenizer", tiny_cfg), 0.5)
    fresh.load_state_dict(saved)
    assert torch.allclose(fresh.shadow[name], expected, atol=1e-6)
    with pytest.raises(KeyError, match="lacks"):
        fresh.load_state_dict({})
    assert ph.Phases(tiny_cfg, {"world_model_no_itok": tok}, {}, {}, None, SimpleNamespace(device=None),
                     emit=None, should_stop=None).averages.keys() == {"world_model_no_itok"}
