"""SIGKILL a real training run mid-epoch, resume it, and check that the epoch counter, the env-frame
counter and the stored episodes carry on without loss or double counting."""
import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from model.checkpoint import load_checkpoint
from model.train.run_dir import read_metrics
from model.train.schedule import collection_target

SETTINGS = {  # tiny preset, GridWorld; epoch 2 trains long enough to be killed in the middle
    "train.initial_random_frames": 200, "train.frames_per_epoch": 300, "train.total_frames": 100000,
    "train.first_epoch_tokenizer_steps": 2, "train.first_epoch_world_model_steps": 2,
    "train.first_epoch_actor_critic_steps": 2, "train.steps_per_epoch": 30, "train.eval_every": 100,
    "train.num_envs": 2,
}


def _cmd(run: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "app", "train", "--env", "gridworld", "--preset", "tiny", "--quiet",
            "--run-dir", str(run), *extra]


def _episodes(run: Path) -> dict[str, int]:
    """Stored training episodes: file name -> steps (files appear atomically, so each is complete)."""
    out = {}
    for f in sorted(glob.glob(str(run / "store" / "episodes" / "train" / "*.npz"))):
        with np.load(f, allow_pickle=False) as d:
            out[os.path.basename(f)] = int(d["actions"].shape[0])
    return out


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume(tmp_path):
    run = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    sets = [a for k, v in SETTINGS.items() for a in ("--set", f"{k}={v}")]
    proc = subprocess.Popen(_cmd(run, "--epochs", "3", *sets), env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        frames_at_ckpt = None
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read().decode()
            epochs = [r["epoch"] for r in read_metrics(run / "metrics.jsonl")]
            assert 2 not in epochs, "epoch 2 finished before it could be interrupted"
            if epochs == [1] and (run / "checkpoints" / "last" / "state.pt").exists():
                if frames_at_ckpt is None:
                    frames_at_ckpt = load_checkpoint(run / "checkpoints" / "last").state["env_frames"]
                # Kill once epoch 2 has stored most of its new episodes (it is then training).
                if sum(_episodes(run).values()) >= frames_at_ckpt + 200:
                    break
            time.sleep(0.2)
        else:
            raise AssertionError("the run never reached the middle of epoch 2")
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL

    before = _episodes(run)
    ck = load_checkpoint(run / "checkpoints" / "last")
    assert ck.state["epoch"] == 1
    assert sum(before.values()) > ck.state["env_frames"], "episodes finished after the checkpoint"
    assert (run / ".lock").exists()  # left behind by the killed trainer: stale, must not block

    res = subprocess.run(_cmd(run, "--resume", "--epochs", "2"), env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr

    after = _episodes(run)
    assert before.items() <= after.items(), "a finished episode was lost"
    ck = load_checkpoint(run / "checkpoints" / "last")
    assert ck.state["epoch"] == 2
    assert ck.state["env_frames"] == sum(after.values()), "env frames must equal the stored steps"
    # Epoch 2's collection only topped the store up to its target: nothing collected twice.
    target = collection_target(ck.cfg, 2)
    assert ck.state["env_frames"] <= max(sum(before.values()), target) + SETTINGS["train.num_envs"]
    metrics = read_metrics(run / "metrics.jsonl")
    assert [r["epoch"] for r in metrics] == [1, 2]
    assert metrics[-1]["env_frames"] == ck.state["env_frames"]
    assert metrics[-1]["wall_time"] > metrics[0]["wall_time"]
    assert not (run / ".lock").exists()
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["train"]["steps_per_epoch"] == 30  # the run's own config, not the preset's


def test_checkpoint_within_an_epoch_keeps_the_training_so_far(tmp_path):
    """With ``train.checkpoint_every``, ``checkpoints/last`` is written inside a phase: the epoch counter is
    unchanged (a resume redoes the epoch) and the weights are those trained so far, not the initial ones."""
    import torch

    from model.config import tiny
    from model.train.loop import train

    cfg = tiny()
    cfg.env.name = "gridworld"
    cfg.train.first_epoch_world_model_steps, cfg.train.checkpoint_every = 5, 2
    seen = []

    def progress(event):
        if event["phase"] == "world_model" and event.get("step") == 3:  # after the checkpoint of step 2
            ck = load_checkpoint(tmp_path / "run" / "checkpoints" / "last")
            seen.append((ck.state["epoch"], {k: v.clone() for k, v in ck.models["world_model"].state_dict().items()}))

    torch.manual_seed(0)
    train(cfg, tmp_path / "run", max_epochs=1, console=False, progress=progress)
    (epoch, mid), = seen
    assert epoch == 0
    final = load_checkpoint(tmp_path / "run" / "checkpoints" / "last")
    assert final.state["epoch"] == 1
    assert any(not torch.equal(mid[k], v) for k, v in final.models["world_model"].state_dict().items())


def test_weight_averages_travel_in_the_checkpoint_and_come_back_on_resume(tmp_path):
    """``train.weight_average``: a checkpoint within a phase carries each average so far (a resume continues it);
    at the end of the epoch the saved weights are the averages themselves."""
    import torch

    from model.config import tiny
    from model.train.loop import train

    cfg = tiny()
    cfg.env.name = "gridworld"
    cfg.train.weight_average = 0.9
    cfg.train.first_epoch_world_model_steps, cfg.train.checkpoint_every = 5, 2
    seen = []

    def progress(event):
        if event["phase"] == "world_model" and event.get("step") == 3:  # after the checkpoint of step 2
            seen.append(load_checkpoint(tmp_path / "run" / "checkpoints" / "last").state)

    torch.manual_seed(0)
    train(cfg, tmp_path / "run", max_epochs=1, console=False, progress=progress)
    (mid,) = seen
    assert set(mid["averages"]) == {"tokenizer", "world_model"}
    final = load_checkpoint(tmp_path / "run" / "checkpoints" / "last")
    weights = dict(final.models["world_model"].named_parameters())
    assert all(torch.equal(weights[n], t) for n, t in final.state["averages"]["world_model"].items())
    assert any(not torch.equal(t, mid["averages"]["world_model"][n]) for n, t in weights.items())
    train(cfg, tmp_path / "run", resume=True, max_epochs=2, console=False)  # the averages load back
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last").state["epoch"] == 2
