"""`deltaplay bench` on the tiny preset, and the play engine's dream-step timing behind `eval`'s feel part."""
from __future__ import annotations

import json

import pytest

from app.bench import BENCHES, WORKLOADS, benchmark_dream
from app.cli import main


def test_benchmark_dream(run_dir):
    out = benchmark_dream(run_dir, steps=5, device="cpu", warmup=1)
    assert out["steps"] == 5 and out["ms_per_step"] > 0
    assert out["steps_per_s"] == pytest.approx(1000.0 / out["ms_per_step"])
    out = benchmark_dream("tiny", steps=3, device="cpu", warmup=0, env="gridworld")
    assert out["steps_per_s"] > 0


def test_every_workload_has_a_benchmark():
    assert set(BENCHES) == set(WORKLOADS)


def test_bench_cli_dream_branches_train_and_profile_on_the_tiny_preset(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = main(["bench", "dream", "branches", "train", "profile", "--preset", "tiny", "--device", "cpu", "--threads", "1",
               "--steps", "2", "--repeats", "1", "--warmup", "0", "--batch", "1", "--json", str(out)])
    assert rc == 0
    r = json.loads(out.read_text())
    assert r["meta"]["preset"] == "tiny" and r["meta"]["path"] == "fast" and r["meta"]["threads"] == 1
    by = {}
    for row in r["results"]:
        by.setdefault(row["workload"], []).append(row)
    assert by["dream"][0]["ms_per_step"] > 0 and by["dream"][0]["steps_per_s"] > 0
    grid = by["branches"][0]
    assert grid["ms_per_grid"] > 0 and grid["ms_one_by_one"] > 0 and grid["what"].endswith("8 futures of one state")
    steps = [row for row in by["train"] if not row["what"].startswith("roof")]
    assert [row["what"].split()[1] for row in steps] == ["tokenizer", "world_model", "actor_critic"]
    assert all(row["s_per_step"] > 0 and row["gflop_per_s"] > 0 and 0 < row["roof_pct"] for row in steps)
    assert steps[0]["gflop_per_pair"] > 0 and steps[1]["gflop_per_frame"] > 0  # convs and matmuls counted
    assert by["train"][-1]["what"].startswith("roof") and by["train"][-1]["gflop_per_s"] > 0
    total = next(row for row in by["profile"] if row["what"].endswith(": total"))
    assert total["share_pct"] == 100.0 and total["gflop"] > 0
    assert "wrote" in capsys.readouterr().out


def test_bench_bf16_profiles_the_dream_with_bf16_conv_nets(tmp_path):
    """--dtype bf16: the dream's conv nets under bf16 (the actor stays float32, as in imagination), and the roof
    conv at bf16."""
    out = tmp_path / "bench.json"
    rc = main(["bench", "profile", "dream", "--preset", "tiny", "--device", "cpu", "--threads", "1", "--dtype", "bf16",
               "--steps", "2", "--repeats", "1", "--warmup", "0", "--json", str(out)])
    assert rc == 0
    rows = json.loads(out.read_text())["results"]
    roof = next(row for row in rows if row["what"].startswith("roof"))
    assert roof["what"].endswith("bf16") and roof["gflop_per_s"] > 0
    assert next(row for row in rows if row["workload"] == "dream")["ms_per_step"] > 0



@pytest.mark.skipif(not __import__("pathlib").Path("/usr/bin/chromium").exists(), reason="no Chromium")
def test_bench_page_plays_through_a_real_page(run_dir, tmp_path, capsys):
    """A key held in headless Chromium on a live server moves the dream; the figure is what the page showed."""
    out = tmp_path / "page.json"
    rc = main(["bench", "page", "--checkpoint", str(run_dir), "--hold", "2", "--repeats", "1", "--json", str(out)])
    assert rc == 0
    r = json.loads(out.read_text())
    assert r["workload"] == "page" and r["training"] is None and len(r["repeats"]) == 1
    assert r["page_steps_per_s"] > 0.5  # a held key played steps the page showed
    assert "steps/s through the page" in capsys.readouterr().out
