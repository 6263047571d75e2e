"""The motion probe: the tile a move goes to, and the whole command on the bundled Crafter checkpoint."""
import json

import numpy as np

from experiments.motion_probe.cli import MOVES, main, target_tile_pixels


def test_the_probe_reads_the_tile_the_move_goes_to():
    frame = np.zeros((64, 64, 3), np.uint8)
    frame[21:28, 35:42] = 200  # the tile right of the player (row 3, column 5 of 7-pixel tiles)
    px = target_tile_pixels(np.stack([frame] * 4), np.array(list(MOVES)))
    assert px.shape == (4, 7 * 7 * 3)
    right = list(MOVES).index("move_right")
    assert np.allclose(px[right], 200 / 255) and all(px[i].max() == 0 for i in range(4) if i != right)


def test_probes_the_bundle_on_held_out_walks(tmp_path, capsys):
    out = tmp_path / "probe.json"
    assert main(["checkpoints/crafter", "--walks", "12", "--keys", "15", "--one-step-walks", "2", "--json", str(out)]) == 0
    assert "probe accuracy" in capsys.readouterr().out
    r = json.loads(out.read_text())
    assert r["move_steps"] == sum(row["steps"] for row in r["per_key"].values()) > 0
    assert 0 < r["blocked_share"] < 1 and set(r["per_key"]) == set(MOVES)
    scored = [row for row in r["per_key"].values() if "majority" in row]  # keys seen in both halves of the walks
    assert scored and all(0 <= row[name] <= 1 for row in scored for name in ("majority", "pixels", "checkpoints/crafter"))
    o = r["one_step"]["checkpoints/crafter"]
    assert 0 < o["steps"] <= 30 and all(0 <= o[k] <= 1 for k in ("agreement", "still_when_real_scrolls"))
