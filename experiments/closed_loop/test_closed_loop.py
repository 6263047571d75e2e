"""The closed-loop study on the bundled Crafter checkpoint, through its command line."""
import json

from experiments.closed_loop.cli import main


def test_measures_the_bundles_tokenizer_in_and_out_of_its_loop(tmp_path, capsys):
    out = tmp_path / "loop.json"
    assert main(["checkpoints/crafter", "--walks", "1", "--keys", "21", "--json", str(out)]) == 0
    assert "closed loop PSNR by step" in capsys.readouterr().out
    (r,) = json.loads(out.read_text())
    assert 25 < r["teacher_psnr_median"] < 60 and 0 <= r["closed_terrain_share"] <= 1
    at = r["closed_psnr_median_at_step"]
    assert set(at) == {"1", "5", "10", "20"} and at["20"] < r["teacher_psnr_median"]  # the loop drifts
    assert r["strip_scroll_steps"] > 0 and 10 < r["strip_psnr_tokens"] < r["teacher_psnr_median"]


def test_refuses_a_walk_too_short_to_judge(capsys):
    assert main(["checkpoints/crafter", "--walks", "1", "--keys", "10"]) == 2
    assert "--keys must be at least 21" in capsys.readouterr().err
