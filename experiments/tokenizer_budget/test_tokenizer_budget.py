"""`python -m experiments.tokenizer_budget.cli` end to end on a few hundred real Crafter transitions (width 8, 3 steps
per model), its re-evaluation from the saved checkpoints, the time budget, and the baseline and code
statistics checked by hand."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from experiments.tokenizer_budget.cli import main
from experiments.tokenizer_budget.run import (Arm, Transitions, batch_indices, code_stats, copy_mse, evaluate,
                                              load_or_collect, shuffled_token_mse, tokenizer_configs, train)
from helpers import run_module

CLI = "experiments.tokenizer_budget.cli"

WORST = 3
COMMON = ["--width", "8", "--train-frames", "200", "--episode-steps", "100", "--frames", "60",
          "--data-episodes", "2", "--batch", "32", "--worst", str(WORST), "--quiet"]


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    root = tmp_path_factory.mktemp("tokenizer_experiment")
    res = run_module(CLI, "--minutes", "5", "--steps", "3", "--curve-every", "0.001", "--curve-frames", "16",
                     "--data-dir", str(root / "data"), "--out-dir", str(root / "out"), "--json", str(root / "r.json"),
                     *COMMON)
    assert res.returncode == 0, res.stderr
    return root, json.loads((root / "r.json").read_text())


@pytest.mark.slow  # the experiment fixture runs the command line
def test_report_fields(experiment):
    root, r = experiment
    assert list(r["models"]) == ["cpu", "paper", "iris"]
    assert r["data"]["train"]["transitions"] == 200 and r["data"]["test"]["transitions"] == 60
    assert r["data"]["train"]["last_seed"] < r["data"]["test"]["first_seed"] == 10_000
    for name, m in r["models"].items():
        k = m["tokens_per_frame"]
        assert k == (16 if name == "iris" else 4)
        assert m["bits_per_frame"] == pytest.approx(k * math.log2(1024))
        assert m["config"]["channels"] == 8
        assert m["steps"] == 3 and m["steps_per_s"] > 0 and m["cpu_s"] > 0
        h = m["heldout"]
        assert h["frames"] == 60
        for key in ("psnr_median", "psnr_mean", "psnr_of_mean_mse", "psnr_worst1pct"):
            assert math.isfinite(h[key])
        assert h["psnr_worst1pct"] <= h["psnr_of_mean_mse"] <= h["psnr_mean"] + 1e-9  # Jensen
        c = m["codes"]
        assert len(c["per_position_distinct"]) == k == len(c["per_position_entropy_bits"])
        assert all(1 <= n <= 60 for n in c["per_position_distinct"])
        assert 0 <= c["entropy_bits"] <= math.log2(c["distinct_codes"]) + 1e-9
        assert [p["steps"] for p in m["curve"]] == [0, 1, 2, 3]  # a point per step at this tiny interval
        assert (root / "out" / name / "weights.safetensors").is_file()
        assert m["shuffled_tokens"]["frames"] == 60 and math.isfinite(m["shuffled_tokens"]["psnr_median"])
    assert r["models"]["paper"]["config"]["decoder"] == "paper"
    assert r["models"]["cpu"]["config"]["decoder"] == "residual"
    cp = r["copy_prev"]
    assert cp["frames"] == 60 and math.isfinite(cp["psnr_median"]) and cp["bits_per_frame"] == 0.0


@pytest.mark.slow  # the experiment fixture runs the command line
def test_worst_frames_strip(experiment):
    from PIL import Image

    root, r = experiment
    w = r["worst_frames"]
    img = Image.open(root / "out" / "worst_frames.png")
    assert img.size == (WORST * 64 * 4, 5 * 64 * 4)  # rows: x_{t-1}, x_t, cpu, paper, iris
    assert len(w["rows"]) == 5 and len(w["transitions"]) == WORST
    cpu_psnr = w["psnr"]["cpu"]
    assert cpu_psnr == sorted(cpu_psnr)  # worst first
    assert max(cpu_psnr) <= r["models"]["cpu"]["heldout"]["psnr_median"] + 1e-6
    # The second row is x_t of the worst transition, upscaled x4 by nearest neighbour.
    data = load_or_collect(root / "data", "test", 10_000, 60, 30)
    _, _, nxt = data.pairs(np.array(w["transitions"][:1]))
    a = np.asarray(img.convert("RGB"))
    np.testing.assert_array_equal(a[256:512:4, 0:256:4], nxt[0])


@pytest.mark.slow  # the experiment fixture runs the command line
def test_eval_only_reproduces_the_numbers(experiment):
    root, r = experiment
    res = run_module(CLI, "--eval-only", "--data-dir", str(root / "data"), "--out-dir", str(root / "out"),
                     "--json", str(root / "again.json"), *COMMON)
    assert res.returncode == 0, res.stderr
    again = json.loads((root / "again.json").read_text())
    for name, m in r["models"].items():
        assert again["models"][name]["steps"] == 3
        assert again["models"][name]["heldout"]["mse_mean"] == pytest.approx(m["heldout"]["mse_mean"], rel=1e-5)
        assert again["models"][name]["codes"]["per_position_distinct"] == m["codes"]["per_position_distinct"]
    assert "copy x_{t-1}" in res.stdout


def test_overlapping_seeds_are_refused(tmp_path, capsys):
    assert main(["--steps", "1", "--train-seed", "10000", "--data-dir", str(tmp_path)]) == 2
    assert "held-out" in capsys.readouterr().err


@pytest.mark.slow  # the experiment fixture runs the command line
def test_budget_stops_each_model_on_its_own_clock(experiment):
    root, _ = experiment
    data = load_or_collect(root / "data", "test", 10_000, 60, 30)  # any cached real transitions will do
    cfgs = tokenizer_configs(width=8)
    from model.nets.tokenizer import build_tokenizer
    from model.train.phases import make_optimizer

    arms = []
    for name in ("cpu", "iris"):
        tok = build_tokenizer(cfgs[name], 17)
        arms.append(Arm(name, tok, make_optimizer(tok, 3e-4, 0.01)))
    train(arms, data, budget_s=0.4, max_steps=0, batch=4, grad_clip=10.0, clock="cpu", schedule="interleaved",
          seed=0, quiet=True)
    for a in arms:
        assert a.cpu_s >= 0.4 and a.steps >= 1 and a.wall_s > 0
    done = [a.steps for a in arms]
    train(arms, data, budget_s=math.inf, max_steps=max(done) + 2, batch=4, grad_clip=10.0, clock="wall",
          schedule="sequential", seed=0, quiet=True)
    assert [a.steps for a in arms] == [max(done) + 2] * 2  # the step cap, each model in turn


def test_batches_depend_on_the_step_only():
    a, b = batch_indices(0, 7, 1000, 32), batch_indices(0, 7, 1000, 32)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, batch_indices(0, 8, 1000, 32))
    assert a.min() >= 0 and a.max() < 1000


def test_copy_baseline_on_a_hand_made_pair():
    x0 = np.zeros((64, 64, 3), np.uint8)
    x1 = x0.copy()
    x1[:8, :8, 0] = 255  # 64 values change by 1.0
    x2 = x1.copy()
    x2[8:16, :4, :] = 51  # 96 more values, each by 0.2
    n = 64 * 64 * 3
    # Two episodes end to end: (x0 -> x1 -> x2) and (x2 -> x2); no transition crosses the boundary.
    data = Transitions(np.stack([x0, x1, x2, x2, x2]), np.array([3, 1, -1, 0, -1]))
    assert len(data) == 3
    prev, act, nxt = data.pairs(np.arange(3))
    np.testing.assert_array_equal(act, [3, 1, 0])
    mse = copy_mse(prev, nxt)
    np.testing.assert_allclose(mse, [64 / n, 96 * 0.2 ** 2 / n, 0.0], rtol=1e-6)
    sub = data.subset(np.array([1]))
    np.testing.assert_array_equal(copy_mse(*sub.pairs(np.arange(1))[::2]), mse[1:2])


def test_code_stats_by_hand():
    tokens = torch.tensor([[0, 5], [1, 5], [0, 5], [1, 5]])
    s = code_stats(tokens, vocab_size=8)
    assert s["per_position_distinct"] == [2, 1]
    assert s["per_position_entropy_bits"] == [pytest.approx(1.0), 0.0]
    assert s["distinct_codes"] == 3
    assert s["entropy_bits"] == pytest.approx(1.5)  # codes 0, 1, 5 used 2, 2, 4 times of 8
    assert s["used_bits_per_frame"] == pytest.approx(1.0)


@pytest.mark.slow  # the experiment fixture runs the command line
def test_shuffled_tokens_measure_what_the_tokens_carry(experiment):
    """Decoding with another frame's tokens: the same error when every frame has the same tokens, a
    different one for IRIS, whose decoder sees nothing but its tokens."""
    from model.checkpoint import load_checkpoint

    root, _ = experiment
    data = load_or_collect(root / "data", "test", 10_000, 60, 30, True)
    iris = load_checkpoint(root / "out" / "iris", names=("tokenizer",)).models["tokenizer"]
    mse, tokens = evaluate(iris, data)
    assert not np.allclose(shuffled_token_mse(iris, data, tokens), mse)
    same = tokens[:1].expand_as(tokens)  # every permutation of identical tokens decodes alike
    assert np.array_equal(shuffled_token_mse(iris, data, same, seed=0), shuffled_token_mse(iris, data, same, seed=1))
    assert not np.array_equal(shuffled_token_mse(iris, data, tokens, seed=0),
                              shuffled_token_mse(iris, data, tokens, seed=1))


@pytest.mark.slow  # the experiment fixture runs the command line
def test_models_trained_in_separate_processes_are_compared_from_their_checkpoints(experiment, tmp_path):
    """--models iris alone (the second core's half of a two-process run) picks the worst frames by its
    own error; --eval-only then tables any subset of the saved models."""
    root, _ = experiment
    out = tmp_path / "r.json"
    assert main(["--eval-only", "--models", "iris", "--data-dir", str(root / "data"),
                 "--out-dir", str(root / "out"), "--json", str(out), *COMMON]) == 0
    r = json.loads(out.read_text())
    assert list(r["models"]) == ["iris"] and r["worst_frames"]["chosen_by"] == "iris"
