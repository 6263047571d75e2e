"""`deltaplay bench side-by-side`: the reference-folder checks, the alternation of real child processes and the
medians and ratios drawn from them. Only the last test needs the published code (vmicheli/delta-iris): it runs
where ``$DELTA_IRIS_REFERENCE`` or /work/ref/delta-iris holds an extracted copy, and is skipped elsewhere."""
from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

import pytest

from app.bench_published import REQUIRED_PARTS, missing_packages
from app.bench_reference import ENV_VAR, Case, Ours, Timing, alternate, format_table, summarize
from app.cli import main

TINY = Timing(threads=1, steps=2, horizon=2, repeats=1, warmup=0)


def _reference_dir() -> Path | None:
    path = Path(os.environ.get(ENV_VAR) or "/work/ref/delta-iris")
    return path if all((path / part).is_file() for part in REQUIRED_PARTS) else None


def _error(capsys, *args: str) -> str:
    rc = main(["bench", "side-by-side", *args])
    assert rc == 2
    return capsys.readouterr().err


def test_without_a_reference_folder_it_says_how_to_get_one(capsys, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    err = _error(capsys)
    assert "side-by-side needs the published Δ-IRIS code" in err
    assert "git clone https://github.com/vmicheli/delta-iris" in err and "--reference DIR" in err


def test_a_missing_or_wrong_reference_folder_is_named_in_plain_words(tmp_path, capsys):
    nope = tmp_path / "nope"
    assert f"reference folder {nope} does not exist" in _error(capsys, "--reference", str(nope))
    assert "is not the published Δ-IRIS code" in (err := _error(capsys, "--reference", str(tmp_path)))
    assert "it has no src/ folder" in err
    (tmp_path / "src").mkdir()  # a src/ alone is not enough: the config and the modules are named
    err = _error(capsys, "--reference", str(tmp_path))
    assert "config/params/crafter.yaml" in err and "src/models/world_model.py" in err
    inside = Path(__file__).resolve().parents[2] / "app"
    assert "is inside this repository" in _error(capsys, "--reference", str(inside))


def test_side_by_side_runs_alone(capsys):
    assert "runs alone" in _error(capsys, "dream", "--reference", "/nowhere")


def test_alternation_medians_and_ratios_on_real_children(tmp_path):
    """Our side twice (the plain path standing in for the reference): three rounds of fresh children,
    reference first in each, and the summary is exactly the medians of what the children measured."""
    case = Case("dream", 1, "dream step, batch 1", "step")
    sides = [Ours(TINY, preset="tiny", path="plain", name="reference"), Ours(TINY, preset="tiny", name="ours")]
    lines: list[str] = []
    runs = alternate([case], sides, rounds=3, workdir=tmp_path, log=lines.append)

    assert [(r.round, r.side) for r in runs] == [(1, "reference"), (1, "ours"), (2, "reference"), (2, "ours"),
                                                 (3, "reference"), (3, "ours")]
    assert [r.order for r in runs] == list(range(6)) and [r.started for r in runs] == sorted(r.started for r in runs)
    assert all(r.error is None and r.figures["wall_ms"] > 0 and r.figures["cpu_ms"] > 0 for r in runs)
    assert len(list(tmp_path.glob("*.json"))) == 6 and len(lines) == 6  # one child (and one JSON) per run

    (row,) = summarize([case], runs)
    for side in ("reference", "ours"):
        for key in ("wall_ms", "cpu_ms"):
            assert row[f"{side}_{key}"] == statistics.median(r.figures[key] for r in runs if r.side == side)
    assert row["ratio_wall"] == pytest.approx(row["reference_wall_ms"] / row["ours_wall_ms"])
    assert row["ratio_cpu"] == pytest.approx(row["reference_cpu_ms"] / row["ours_cpu_ms"])
    assert row["reference_runs"] == row["ours_runs"] == 3
    assert f"{row['ratio_wall']:.2f}x" in format_table([row])


def test_a_failed_child_is_reported_not_counted(tmp_path):
    case = Case("dream", 1, "dream step, batch 1", "step")
    broken = Ours(TINY, preset="no-such-preset", name="reference")  # the child's argparse rejects it
    runs = alternate([case], [broken, Ours(TINY, preset="tiny")], rounds=1, workdir=tmp_path, log=lambda s: None)
    assert runs[0].error and "exit code 2" in runs[0].error and runs[1].error is None
    (row,) = summarize([case], runs)
    assert row["error"] == "no successful run on reference" and row["ours_runs"] == 1
    assert "no successful run on reference" in format_table([row])


@pytest.mark.skipif(_reference_dir() is None,
                    reason=f"needs the published Δ-IRIS code extracted at ${ENV_VAR} or /work/ref/delta-iris")
@pytest.mark.skipif(bool(missing_packages()), reason="the published code needs einops and omegaconf")
def test_side_by_side_against_the_published_code(tmp_path, capsys):
    """The whole command on a tiny workload: the published code at its own configuration, ours at tiny."""
    out = tmp_path / "sbs.json"
    rc = main(["bench", "side-by-side", "--reference", str(_reference_dir()), "--preset", "tiny",
               "--compare", "imagine", "world_model", "--imagine-batch", "2", "--train-batch", "1",
               "--steps", "2", "--horizon", "2", "--repeats", "1",
               "--warmup", "0", "--rounds", "1", "--json", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    r = json.loads(out.read_text())
    assert r["meta"]["threads"] == 1 and r["meta"]["rounds"] == 1 and "reference time / our time" in r["meta"]["ratio"]
    assert [(x["side"], x["case"]) for x in r["runs"]] == [
        ("reference", "imagine batch 2 horizon 2"), ("ours", "imagine batch 2 horizon 2"),
        ("reference", "world-model train step 1x21"), ("ours", "world-model train step 1x21")]
    imagine, wm = r["results"]  # imagination drives the published dream step too, with its actor
    assert imagine["reference_wall_ms"] > 0 and imagine["ours_wall_ms"] > 0 and imagine["ratio_wall"] > 0
    assert imagine["reference_frames_per_s"] > 0 and imagine["ours_frames_per_s"] > 0
    assert wm["reference_tokens_given_wall_ms"] > 0  # the published step also timed without its encoding
    assert "imagine batch 2 horizon 2" in printed and "wrote" in printed


@pytest.mark.skipif(_reference_dir() is None,
                    reason=f"needs the published Δ-IRIS code extracted at ${ENV_VAR} or /work/ref/delta-iris")
@pytest.mark.skipif(bool(missing_packages()), reason="the published code needs einops and omegaconf")
def test_bf16_runs_each_sides_own_mixed_precision(tmp_path):
    """--dtype bf16: the published training step under its trainer's bf16 autocast, ours at --dtype bf16; the
    published dream has no mixed precision, so its children stay float32."""
    import subprocess
    import sys

    for workload, expected in (("world_model", "bf16 autocast"), ("dream", "float32")):
        out = tmp_path / f"{workload}.json"
        # a child process, as the side-by-side runs it: the published code's stand-in modules stay out of this one
        subprocess.run([sys.executable, "-m", "app.bench_published", "--reference", str(_reference_dir()),
                        "--workload", workload, "--batch", "1", "--steps", "2", "--repeats", "1", "--warmup", "0",
                        "--mixed-precision", "--json", str(out)], check=True, capture_output=True, timeout=600)
        r = json.loads(out.read_text())
        assert r["dtype"] == expected and r["wall_ms"] > 0
    out = tmp_path / "sbs.json"
    assert main(["bench", "side-by-side", "--reference", str(_reference_dir()), "--preset", "tiny", "--dtype", "bf16",
                 "--compare", "world_model", "--train-batch", "1", "--repeats", "1", "--warmup", "0",
                 "--rounds", "1", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["meta"]["dtype"] == "bf16" and r["results"][0]["ratio_wall"] > 0
