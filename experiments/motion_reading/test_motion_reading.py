"""Tuning the motion head on decoded frames."""
import numpy as np
import pytest
import torch

from experiments.motion_reading.tune import Reading, accuracy, readings, tune_head
from experiments.scroll_code.cli import real_walks
from model.checkpoint import load_checkpoint
from model.data.frames import to_tensor
from model.data.view_motion import env_key_motions, geometry_for, motion_labels


@pytest.fixture(scope="module")
def bundle():
    return load_checkpoint("checkpoints/crafter", with_state=False)


def test_a_walks_readings_pair_real_and_decoded_frames_with_the_real_motion(bundle):
    one = real_walks(960_000, 1, 12)[0]
    frames, actions = one["frames"], np.array(one["actions"])
    assert frames.shape[0] == actions.shape[0] + 1 == 13
    real, decoded = readings(bundle.models["tokenizer"], frames, actions, geometry_for("crafter"),
                             env_key_motions("crafter"))
    t = to_tensor(frames, "cpu")
    want = motion_labels(t[:-1], t[1:], torch.as_tensor(actions), env_key_motions("crafter"), geometry_for("crafter"))
    assert torch.equal(real.labels, want) and torch.equal(decoded.labels, want)
    assert (want > 0).any()  # the walk scrolls
    assert torch.equal(decoded.frames[0], real.frames[0])  # the dream starts on the real frame
    assert not torch.equal(decoded.frames[5], real.frames[5])  # then reads its own decoded frames


def test_tuning_fits_the_head_and_nothing_else(bundle):
    wm = bundle.models["world_model"]
    head, others = wm.motion_head, {k: v.clone() for k, v in wm.state_dict().items() if "motion_head" not in k}
    g = torch.Generator().manual_seed(0)
    actions = torch.randint(1, 5, (128,), generator=g)
    walls = torch.rand(128, generator=g) < 0.5  # a wall: a dark frame; the move key scrolls only without one
    frames = torch.where(walls[:, None, None, None], 0.1, 0.9) + 0.05 * torch.rand(128, 3, 64, 64, generator=g)
    data = Reading(frames, actions, torch.where(walls, 0, actions))  # move keys 1-4 scroll as motions 1-4
    inverted = Reading(frames, actions, torch.where(walls, actions, 0))  # the opposite rule, for a start far off
    tune_head(head, inverted, inverted, seconds=60, steps=100, lr=3e-3)
    before = accuracy(head, data)
    facts = tune_head(head, data, data, seconds=60, steps=100, lr=3e-3)
    assert facts["steps"] == 100 and before < 0.5 < 0.95 < accuracy(head, data)
    assert all(torch.equal(v, wm.state_dict()[k]) for k, v in others.items())


def test_the_command_writes_a_checkpoint_whose_heads_alone_changed(tmp_path, capsys):
    from experiments.motion_reading.cli import main

    out = tmp_path / "tuned"
    assert main(["checkpoints/crafter", "--out", str(out), "--walks", "2", "--walk-steps", "10", "--eval-walks", "1",
                 "--steps", "3", "--every", "0", "--data", str(tmp_path / "walks.pt"), "--quiet"]) == 0
    old, new = (load_checkpoint(p, with_state=False).models for p in ("checkpoints/crafter", out))
    changed = {k for k, v in new["world_model"].state_dict().items() if not torch.equal(v, old["world_model"].state_dict()[k])}
    assert changed and all(k.startswith("motion_head.") for k in changed)
    for name in ("tokenizer", "world_model_no_itok"):
        assert all(torch.equal(v, old[name].state_dict()[k]) for k, v in new[name].state_dict().items())
    assert main(["checkpoints/crafter", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["checkpoints/crafter", "--out", str(tmp_path / "again"), "--walks", "3", "--walk-steps", "10",
                 "--eval-walks", "1", "--data", str(tmp_path / "walks.pt"), "--quiet"]) == 2  # a file of other walks
    assert "holds other walks" in capsys.readouterr().err


def test_the_diagnosis_splits_one_walks_steps_by_the_heads_pick(tmp_path, capsys):
    import json

    from experiments.motion_reading.diagnose import main

    out = tmp_path / "diag.json"
    assert main(["checkpoints/crafter", "--walks", "1", "--json", str(out)]) == 0
    d = json.loads(out.read_text())
    assert d["all"]["pairs"] == d["moved"]["pairs"] + d["blocked"]["pairs"] == d["first_view"]["pairs"] + d["unseen"]["pairs"] > 10
    assert d["all"]["head_right_on_real_frames"] > 0.9  # the bundle's head reads real frames
    assert d["all"]["dream_follows_head"] > 0.8  # and its transformer follows the head
    assert "first_view" in capsys.readouterr().out
