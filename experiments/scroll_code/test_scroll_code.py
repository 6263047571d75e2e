"""The scroll-code measurements on the bundled Crafter checkpoint, through the study's command line."""
import json

from experiments.scroll_code.cli import main


def test_measures_the_bundle_on_held_out_walks(tmp_path, capsys):
    out = tmp_path / "scroll.json"
    assert main(["checkpoints/crafter", "--walks", "2", "--keys", "10", "--json", str(out)]) == 0
    assert "scroll steps" in capsys.readouterr().out
    (r,) = json.loads(out.read_text())
    assert r["decoder"] == "residual" and r["scroll_steps"] > 0
    assert all(1 <= n <= r["scroll_steps"] for n in r["distinct_codes_per_position"])
    assert 20 < r["recon_psnr_median"] < 100 and r["recon_psnr_worst5pct"] <= r["recon_psnr_median"]
    assert 0 < r["nll_still"] < r["nll_uniform"] * 2 and 0 < r["nll_scroll"] < r["nll_uniform"] * 2
