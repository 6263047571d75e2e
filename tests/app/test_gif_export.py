"""`deltaplay export-gif` on a tiny trained checkpoint: frame count, size and timing read back."""
from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from app.cli import main
from app.engine import ModelBundle, VariantUnavailable
from app.gif_export import export_rollout_gif, read_actions
from app.recorder import HEADER_PX, SEPARATOR_PX


def gif_facts(path: Path) -> tuple[tuple[int, ...], list[int]]:
    shape = iio.improps(path, index=None).shape
    return shape, [iio.immeta(path, index=k)["duration"] for k in range(shape[0])]


def test_random_side_by_side(bundle, tmp_path):
    path, n = export_rollout_gif(tmp_path / "a.gif", checkpoint=bundle, steps=6, policy="random",
                                 side_by_side=True, scale=2, fps=20, seed=3, return_count=True)
    (frames, h, w, _), durations = gif_facts(path)
    assert n == frames == 7  # start frame + 6 steps
    assert w == 2 * 64 * 2 + SEPARATOR_PX and h > 64 * 2
    assert durations == [50] * 7
    # The right half is the real env: its first frame is exactly the seeded env's first frame.
    from model.data.envs import make_env

    first = iio.imread(path, index=0)
    obs, _ = make_env("gridworld").reset(seed=3)
    top = HEADER_PX  # the column names' strip
    np.testing.assert_array_equal(first[top:top + 128:2, 130::2], obs)
    # ... and so is the left half (the dream starts from the real frame).
    np.testing.assert_array_equal(first[top:top + 128:2, :128:2], obs)
    # The strip names the columns: it is not blank over either panel.
    assert first[:top, :128].std() > 0 and first[:top, 130:].std() > 0


def test_compare_i_tokens_adds_a_column(bundle, tmp_path):
    path = export_rollout_gif(tmp_path / "b.gif", checkpoint=bundle, steps=4, policy="agent",
                              side_by_side=True, compare_i_tokens=True, scale=1, fps=10, seed=1)
    (frames, h, w, _), durations = gif_facts(path)
    assert frames == 5 and w == 3 * 64 + 2 * SEPARATOR_PX and durations == [100] * 5


def test_action_file_by_name_and_index(bundle, tmp_path):
    f = tmp_path / "acts.txt"
    f.write_text("up, right  # comment\n2\nleft\n")
    acts = read_actions(f)
    assert acts == ["up", "right", 2, "left"]
    path = export_rollout_gif(tmp_path / "c.gif", checkpoint=bundle, steps=8, policy=acts,
                              side_by_side=False, scale=3, fps=25)
    (frames, h, w, _), durations = gif_facts(path)
    assert frames == 9 and w == 64 * 3 and durations == [40] * 9
    with pytest.raises(ValueError, match="unknown action 'jump'"):
        export_rollout_gif(tmp_path / "d.gif", checkpoint=bundle, steps=2, policy=["jump"])


def test_single_variant_refuses_compare(bundle, tmp_path):
    only = ModelBundle(cfg=bundle.cfg, device=bundle.device, tokenizer=bundle.tokenizer,
                       world_models={True: bundle.world_models[True]}, actor_critic=None)
    with pytest.raises(VariantUnavailable, match="--baselines"):
        export_rollout_gif(tmp_path / "e.gif", checkpoint=only, steps=2, compare_i_tokens=True)
    # "auto" falls back to random actions when there is no agent.
    path = export_rollout_gif(tmp_path / "f.gif", checkpoint=only, steps=3, side_by_side=False, scale=1)
    assert gif_facts(path)[0][0] == 4


def test_cli(run_dir, tmp_path, capsys):
    out = tmp_path / "cli.gif"
    rc = main(["export-gif", "--checkpoint", str(run_dir), "--out", str(out), "--steps", "5", "--policy",
               "random", "--side-by-side", "--compare-i-tokens", "--scale", "2", "--fps", "5"])
    assert rc == 0
    assert f"wrote 6 frames (5 fps) to {out}" in capsys.readouterr().out
    (frames, h, w, _), durations = gif_facts(out)
    assert frames == 6 and w == 3 * 128 + 2 * SEPARATOR_PX and durations == [200] * 6
    rc = main(["export-gif", "--checkpoint", str(tmp_path / "missing"), "--out", str(out)])
    assert rc == 2
    assert "deltaplay train" in capsys.readouterr().err


def test_branches_gif_shows_futures_from_one_start(bundle, tmp_path, capsys):
    out = tmp_path / "futures.gif"
    rc = main(["export-gif", "--checkpoint", str(bundle.path), "--out", str(out), "--branches", "4",
               "--steps", "6", "--policy", "random", "--scale", "1", "--seed", "2"])
    assert rc == 0 and "of 4 futures" in capsys.readouterr().out
    gif = iio.imread(out, index=None)
    assert gif.shape[0] == 7 and gif.shape[2] == 4 * 64 + 3 * SEPARATOR_PX
    panel = lambda k, t: gif[t, HEADER_PX:HEADER_PX + 64, k * (64 + SEPARATOR_PX):k * (64 + SEPARATOR_PX) + 64]  # noqa: E731
    from model.data.envs import make_env

    obs, _ = make_env("gridworld").reset(seed=2)
    for k in range(4):  # every future starts on the real frame
        np.testing.assert_array_equal(panel(k, 0), obs)
    # At temperature 1 the futures sample their own tokens: some pair of them differs by the end.
    last = [panel(k, 6).astype(int) for k in range(4)]
    assert max(np.abs(a - b).mean() for a in last for b in last) > 0
    assert main(["export-gif", "--checkpoint", str(bundle.path), "--out", str(out), "--branches", "4",
                 "--side-by-side"]) == 2
