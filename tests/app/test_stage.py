"""`deltaplay stage` on a tiny Crafter bundle: a stage starts from the bundle in a fresh folder, trains, scores
the dream, and replaces the bundle only when the score beats the bundle's; a stage stopped early resumes."""
import json
import shutil

import pytest
import torch

from app.cli import main
from model.checkpoint import WEIGHTS, export_checkpoint, load_checkpoint
from model.config import tiny
from model.train.loop import train

pytestmark = pytest.mark.slow

PLAN = {"set": {"train.initial_random_frames": 150, "train.first_epoch_tokenizer_steps": 0,
                "train.first_epoch_world_model_steps": 3, "train.first_epoch_actor_critic_steps": 0,
                "train.test_episodes": 0, "train.checkpoint_every": 2},
        "next_seed": 5, "history": []}


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("stage")
    cfg = tiny()
    cfg.env.name = "crafter"
    cfg.train.initial_random_frames = 150
    cfg.train.test_episodes = 0  # the stages never read the agent's return
    torch.manual_seed(0)
    train(cfg, root / "run", max_epochs=1, console=False)
    return export_checkpoint(root / "run" / "checkpoints" / "last", root / "bundle")


def _bundle_with_plan(src, dst, best, walks=1):
    shutil.copytree(src, dst)
    (dst / "stage.json").write_text(json.dumps({**PLAN, "best": {"score": best, "walks": walks}}))
    return dst


def _stage(bundle, run_dir, minutes="5"):
    return main(["stage", "--bundle", str(bundle), "--run-dir", str(run_dir), "--minutes", minutes, "--walks", "1",
                 "--threads", "1", "--quiet"])


def test_a_stage_that_does_not_beat_the_bundle_leaves_it_as_it_was(tiny_bundle, tmp_path, capsys):
    bundle = _bundle_with_plan(tiny_bundle, tmp_path / "bundle", best=2.0)  # no dream scores above 1
    before = (bundle / WEIGHTS).read_bytes()
    assert _stage(bundle, tmp_path / "run") == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert "bundle kept" in last and "of the dream's tiles" in last  # the terrain beside the keys score
    assert (bundle / WEIGHTS).read_bytes() == before
    plan = json.loads((bundle / "stage.json").read_text())
    (entry,) = plan["history"]
    assert not entry["exported"] and entry["bar"] == 2.0 and 0 <= entry["score"] <= 1
    assert entry["seed"] == 5 and plan["next_seed"] == 6 and entry["steps"]["world_model"] == 3
    assert "deltaplay stage" in entry["command"] and entry["env_frames"] >= 150
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last").cfg.train.init["world_model"] == \
        str(bundle.resolve())  # the stage started from the bundle


def test_a_stage_that_beats_the_bundle_replaces_it(tiny_bundle, tmp_path):
    bundle = _bundle_with_plan(tiny_bundle, tmp_path / "bundle", best=-1.0)
    old = load_checkpoint(bundle).models["world_model"].state_dict()
    assert _stage(bundle, tmp_path / "run") == 0
    plan = json.loads((bundle / "stage.json").read_text())
    assert plan["history"][0]["exported"] and plan["best"]["score"] == plan["history"][0]["score"]
    new = load_checkpoint(bundle).models["world_model"].state_dict()  # still a loadable bundle, fp16 weights
    assert any(not torch.equal(old[k], v) for k, v in new.items())
    assert (bundle / "stage.json").is_file()  # the export keeps the plan


def test_a_stage_stopped_by_its_budget_resumes_with_the_same_command(tiny_bundle, tmp_path, capsys):
    bundle = _bundle_with_plan(tiny_bundle, tmp_path / "bundle", best=2.0)
    assert _stage(bundle, tmp_path / "run", minutes="0.0001") == 2  # stopped while collecting: nothing trained
    assert "stopped before it trained anything" in capsys.readouterr().err
    assert json.loads((bundle / "stage.json").read_text())["history"] == []
    assert _stage(bundle, tmp_path / "run") == 0  # the same folder: its episodes are kept, the stage goes on
    assert json.loads((bundle / "stage.json").read_text())["history"][0]["status"] == "finished"


def test_a_bar_measured_on_other_walks_is_measured_again(tiny_bundle, tmp_path):
    bundle = _bundle_with_plan(tiny_bundle, tmp_path / "bundle", best=2.0, walks=16)  # the stage scores 1 walk
    assert _stage(bundle, tmp_path / "run") == 0
    entry = json.loads((bundle / "stage.json").read_text())["history"][0]
    assert 0 <= entry["bar"] <= 1  # the bundle's own score on the stage's walk, not the recorded 2.0


def test_a_bundle_without_a_plan_is_refused_in_plain_words(tiny_bundle, tmp_path, capsys):
    assert _stage(tiny_bundle, tmp_path / "run") == 2
    assert "no stage plan" in capsys.readouterr().err


def test_the_plan_and_the_gpu_overrides_shape_the_stage_config(tiny_bundle):
    from app.stage import stage_config

    plan = {**PLAN, "set_gpu": {"train.first_epoch_world_model_steps": 40}}
    cpu_cfg = stage_config(tiny_bundle, plan, [("train.lr", "0.01")])
    gpu_cfg = stage_config(tiny_bundle, plan, [], gpu=True)
    assert cpu_cfg.seed == 5 and cpu_cfg.train.lr == 0.01 and cpu_cfg.train.first_epoch_world_model_steps == 3
    assert gpu_cfg.train.first_epoch_world_model_steps == 40 and gpu_cfg.train.num_envs >= 2
    assert set(cpu_cfg.train.init) == {"tokenizer", "world_model", "actor_critic"}  # every model of the bundle
