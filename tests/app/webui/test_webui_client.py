"""The web UI through its HTTP API: gradio_client against a live in-process server on 127.0.0.1,
on a tiny GridWorld checkpoint trained for one epoch by the real trainer (with the baselines, so
both world-model variants and the IRIS-style tokenizer exist)."""
from __future__ import annotations

import math
import shutil
import threading
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from app.webui import app as webui
from app.webui.common import SCALE
from app.webui.futures_panel import FUTURE_SCALE, HEAT_SCALE
from app.webui.tokenizer_tab import MAP_SCALE, TOK_SCALE

pytestmark = pytest.mark.slow  # a live server and HTTP round trips


@pytest.fixture(scope="module")
def server(tiny_run, tmp_path_factory):
    gallery = tmp_path_factory.mktemp("gallery")
    runs = tmp_path_factory.mktemp("runs")
    demo = webui.build_app(tiny_run, runs_dir=runs, gallery_dir=gallery, device="cpu")
    _, url = webui.launch(demo, port=None, block=False, quiet=True)
    assert url.startswith("http://127.0.0.1:")
    yield url, gallery, runs
    demo.deltaplay["jobs"].shutdown()
    demo.close()


@pytest.fixture
def client(server, tmp_path):
    return Client(server[0], analytics_enabled=False, verbose=False, download_files=str(tmp_path))


def reset(c: Client, tiny_run: Path, seed: int = 3, i_tokens: bool = True):
    """reset(checkpoint, seed, i_tokens, shadow, horizon, temperature, controller)."""
    return c.predict(str(tiny_run), seed, i_tokens, True, 16, 1.0, "human", api_name="/reset")


def image_size(path: str) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size


def test_reset_and_step_return_frames_of_the_right_size(client, tiny_run):
    out = reset(client, tiny_run)
    dream, real, stats = out[0], out[1], out[2]
    side = 64 * SCALE
    assert image_size(dream) == (side, side)
    assert image_size(real) == (side, side)
    assert "**step** 0" in stats
    first = np.asarray(Image.open(real))
    for k in range(1, 4):
        dream, real, stats = client.predict(1 + k % 4, api_name="/step")[:3]
        assert image_size(dream) == (side, side)
        assert f"**step** {k}" in stats
        assert "error vs real" in stats
    # The shadow env moved with the same actions: its frame differs from the first one.
    assert not np.array_equal(np.asarray(Image.open(real)), first)


def test_i_token_switch(client, tiny_run):
    reset(client, tiny_run)
    client.predict(2, api_name="/step")
    out = client.predict(False, api_name="/set_i_tokens")
    assert "I-tokens **off**" in out[2] and out[3] is False
    stats = client.predict(3, api_name="/step")[2]
    assert "I-tokens **off**" in stats and "**step** 2" in stats  # swapped in place, not a reset
    out = client.predict(True, api_name="/set_i_tokens")
    assert "I-tokens **on**" in out[2] and out[3] is True


def test_export_gif_writes_the_episode_or_the_clip(client, tiny_run, server):
    reset(client, tiny_run)
    for a in (1, 4, 2, 3):
        client.predict(a, api_name="/step")
    path = client.predict(api_name="/export_gif")
    assert Path(path).suffix == ".gif"
    n, h, w, _ = iio.improps(path, index=None).shape
    assert n == 5  # the reset frame + 4 steps (footers keep frames distinct), no Record needed
    assert w > h  # dream | real side by side
    assert list(server[1].glob("play-*.gif")), "the GIF is kept in the gallery folder"
    gallery = client.predict(api_name="/gallery")
    assert any(Path(item["image"]).suffix == ".gif" for item in gallery[0])
    # "Start clip here" at step 4: the export then starts there.
    stats = client.predict(api_name="/start_clip")
    assert "clip from step 4" in stats
    for a in (1, 2):
        client.predict(a, api_name="/step")
    assert iio.improps(client.predict(api_name="/export_gif"), index=None).shape[0] == 3
    # A reset starts a new episode, and a new buffer.
    reset(client, tiny_run)
    client.predict("1", api_name="/play_keys")
    assert iio.improps(client.predict(api_name="/export_gif"), index=None).shape[0] == 2


def test_play_keys_plays_a_batch_in_order(client, tiny_run):
    reset(client, tiny_run)
    stats = client.predict("1, 1,3,2", api_name="/play_keys")[2]
    assert "**step** 4" in stats
    with pytest.raises(AppError, match=r"Move '9' is not an action of this env: use 0\.\.4"):
        client.predict("1,9", api_name="/play_keys")
    assert "**step** 5" in client.predict(0, api_name="/step")[2]  # a refused batch plays none of its moves


def test_bad_inputs_give_clear_errors(client, tiny_run, tmp_path):
    fresh = Client(client.src, analytics_enabled=False, verbose=False, download_files=str(tmp_path))
    with pytest.raises(AppError, match="No dream loaded"):
        fresh.predict(1, api_name="/step")
    with pytest.raises(AppError, match="No dream loaded"):
        fresh.predict(api_name="/export_gif")
    reset(fresh, tiny_run)
    with pytest.raises(AppError, match=r"out of range: gridworld has actions 0\.\.4"):
        fresh.predict(99, api_name="/step")
    with pytest.raises(AppError, match="no such checkpoint") as e:
        fresh.predict(str(tmp_path / "missing"), -1, True, True, 16, 1.0, "human", api_name="/reset")
    assert str(tmp_path) not in str(e.value)  # a server path is shortened to its last parts
    bogus = tmp_path / "not_an_image.png"
    bogus.write_text("this is text, not pixels")
    with pytest.raises(AppError) as e:
        fresh.predict("upload", 0, 0, -1, handle_file(str(bogus)), handle_file(str(bogus)), 0,
                      api_name="/compare_tokenizers")
    assert "not a readable image" in str(e.value) and "Traceback" not in str(e.value)


def test_tokenizer_comparison(client, tiny_run, tmp_path):
    reset(client, tiny_run)
    out = client.predict("fresh rollout", 0, 5, -1, None, None, 0, api_name="/compare_tokenizers")
    notice, original, iris, delta, prev, iris_err, delta_err, table, tokens = out
    for img in (original, iris, delta, prev, iris_err, delta_err):
        assert image_size(img) == (64 * TOK_SCALE,) * 2
    rows = {r[0].split(" (")[0]: r for r in table["data"]}
    assert set(rows) == {"IRIS-style", "Δ-tokenizer", "copy x_{t-1}"}
    # bits per frame = tokens x log2(vocab): tiny preset has a 64-code vocabulary.
    assert rows["Δ-tokenizer"][3] == pytest.approx(4 * math.log2(64))
    assert rows["IRIS-style"][3] == pytest.approx(16 * math.log2(64))
    assert all(0 <= r[4] <= 1 for r in rows.values())
    assert "token ids" in tokens
    # An uploaded pair of the wrong size is resized, with a notice.
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(a)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(b)
    out = client.predict("upload", 0, 0, -1, handle_file(str(a)), handle_file(str(b)), 1,
                         api_name="/compare_tokenizers")
    assert "resized to 64x64" in out[0]
    assert image_size(out[1]) == (64 * TOK_SCALE,) * 2
    # The stored episodes of the run folder are a frame source too; the batch finds a worst 1%.
    out = client.predict("stored episode", 0, 3, -1, None, None, 0, api_name="/compare_tokenizers")
    assert out[2] is not None
    table, worst = client.predict("fresh rollout", 0, -1, 32, api_name="/tokenizer_batch")
    assert [r[1] for r in table["data"]] == [32, 32, 32]
    assert len(worst) == 2  # ceil(1% of 32) = 1 per tokenizer


def test_itoken_rollout_and_gif(client, tiny_run):
    reset(client, tiny_run)
    out = client.predict(6, 1, 1.0, "random", api_name="/itoken_rollout")
    summary, scrub, real, with_i, without_i, plot = out
    assert summary.startswith("6 steps")
    assert all(image_size(p) == (320, 320) for p in (real, with_i, without_i))
    series = {row[2] for row in plot["data"]}
    assert series == {"with I-tokens", "without I-tokens"}
    gif = client.predict(api_name="/itoken_gif")
    n, h, w, _ = iio.improps(gif, index=None).shape
    assert n == 7 and w > 2 * h  # three columns, reset frame + 6 steps


def test_two_clients_play_independently(server, tiny_run, tmp_path):
    a = Client(server[0], analytics_enabled=False, verbose=False, download_files=str(tmp_path / "a"))
    b = Client(server[0], analytics_enabled=False, verbose=False, download_files=str(tmp_path / "b"))
    reset(a, tiny_run, seed=1)
    reset(b, tiny_run, seed=2)
    for _ in range(3):
        a.predict(1, api_name="/step")
    stats_b = b.predict(2, api_name="/step")[2]
    stats_a = a.predict(1, api_name="/step")[2]
    assert "**step** 1" in stats_b and "**step** 4" in stats_a


def test_train_tab_refuses_a_busy_folder_and_shows_a_crash(client, server):
    """A run whose env cannot be built crashes in its child process; the Train tab shows why.
    Starting a second run into the same folder is refused."""
    args = ["crafter-typo", "atari:NoSuchGame", "tiny", "cpu", "delta", True, False, 0, 1]
    out = client.predict(*args, api_name="/train_start")
    assert "crafter-typo" in out[2]
    with pytest.raises(AppError, match="already"):
        client.predict(*args, api_name="/train_start")
    for _ in range(600):  # a deadline, not a timing assertion: the child needs a few s to import torch
        out = client.predict("crafter-typo", api_name="/train_refresh")
        if "crashed" in out[2]:
            break
        threading.Event().wait(0.2)
    assert "**crashed**" in out[2]
    error = out[3]["value"] if isinstance(out[3], dict) else out[3]  # a visibility update carries the text
    assert "NoSuchGame" in error
    assert "crafter-typo" in [row[0] for row in out[1]["data"]]


def test_agent_controls_and_play_this_run(client, tiny_run, server):
    reset(client, tiny_run)
    stats, ctrl = client.predict("agent", api_name="/set_controller")
    assert ctrl == "agent" and "**agent**" in stats
    stats = client.predict(api_name="/agent_step")[2]
    assert "**step** 1" in stats and "**agent**" in stats
    # "Play this run" opens a run of the runs folder in the Play tab (its checkpoints/last).
    runs = Path(server[2])
    (runs / "copied" / "checkpoints").mkdir(parents=True)
    shutil.copytree(tiny_run / "checkpoints" / "last", runs / "copied" / "checkpoints" / "last")
    client.predict("copied", api_name="/train_refresh")
    out = client.predict("copied", -1, True, True, 16, 1.0, "human", api_name="/train_play")
    checkpoint, dream, _, stats = out[:4]
    assert checkpoint["value"] == str(runs / "copied")  # the Play tab's checkpoint box (choices refreshed)
    assert str(runs / "copied") in [c[1] for c in checkpoint["choices"]]
    assert "**step** 0" in stats and image_size(dream) == (64 * SCALE,) * 2


def test_files_are_served_only_from_the_app_folders(server, tiny_run):
    import urllib.error
    import urllib.request

    url, gallery, runs = server
    (runs / "note.txt").write_text("inside the runs folder")

    def status(path: Path) -> int:
        try:
            with urllib.request.urlopen(f"{url}gradio_api/file={path}") as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    assert status(runs / "note.txt") == 200
    assert status(Path(webui.__file__)) == 403  # the source tree is not served
    assert status(tiny_run / "config.json") == 403  # nor a checkpoint outside the runs folder
    assert status(Path("/etc/passwd")) == 403


# ------------------------------------------------------------------- futures and the token inspector

def pixels(path: str, scale: int) -> np.ndarray:
    """An upscaled frame back at 64x64 (every ``scale``-th pixel of the nearest-neighbour upscale)."""
    return np.asarray(Image.open(path).convert("RGB"))[::scale, ::scale]


def test_futures_grid_and_pick_branch(client, tiny_run):
    reset(client, tiny_run)
    client.predict(1, api_name="/step")
    grid, table, note = client.predict(-1, 8, api_name="/futures")
    assert len(grid) == 8 and len(table["data"]) == 8
    assert "8 futures of step 1" in note
    assert [r[0] for r in table["data"]] == list(range(1, 9))
    assert all(len(r[1].split()) == 4 for r in table["data"])  # tiny preset: 4 Δ-tokens per frame
    assert all(r[2] <= 0 and 0 <= r[4] <= 1 for r in table["data"])  # log p, end probability
    chosen = pixels(grid[2]["image"], FUTURE_SCALE)
    out = client.predict(3, api_name="/pick_branch")
    dream, stats, after_grid = out[0], out[2], out[5]
    assert np.array_equal(pixels(dream, SCALE), chosen), "the dream continues from branch 3's exact frame"
    assert "**step** 2" in stats and "continued from branch 3" in stats
    assert not after_grid  # those futures are spent
    with pytest.raises(AppError, match="No futures to pick from"):
        client.predict(1, api_name="/pick_branch")


def test_token_inspector_edit_changes_the_frame(client, tiny_run):
    reset(client, tiny_run)
    before = client.predict(2, api_name="/step")[0]
    note, table, *_ = client.predict(api_name="/inspect")
    assert "Step 1: 4 Δ-tokens" in note and len(table["data"]) == 4
    rows = table["data"]
    assert all(r[2] for r in rows)  # each position has its top alternatives, "token (probability)"
    # Swap tokens until one moves the frame (the tiny model decodes some codes alike).
    for row in rows:
        position, current = row[0], int(row[1].split()[0])
        alt = next(int(c.split()[0]) for c in row[2:] if c and int(c.split()[0]) != current)
        out = client.predict(position, alt, api_name="/set_token")
        note, table, heat, dream, stats = out[0], out[1], out[4], out[5], out[7]
        assert table["data"][position - 1][1].startswith(f"{alt} (") and f"token {position} set to {alt}" in stats
        if not np.array_equal(pixels(dream, SCALE), pixels(before, SCALE)):
            break
    else:
        pytest.fail("no token swap changed the frame")
    assert image_size(heat) == (64 * HEAT_SCALE,) * 2
    assert np.asarray(Image.open(heat)).max() > 0  # the heat map lights up where the frame changed
    assert "changed by" in note
    resampled = client.predict(1, api_name="/resample_token")
    assert resampled[1]["data"][0][0] == 1 and "**step** 1" in resampled[7]


def test_futures_and_inspector_bad_inputs(client, tiny_run, tmp_path):
    fresh = Client(client.src, analytics_enabled=False, verbose=False, download_files=str(tmp_path))
    with pytest.raises(AppError, match="No dream loaded"):
        fresh.predict(-1, 8, api_name="/futures")
    reset(fresh, tiny_run)
    with pytest.raises(AppError, match="No futures to pick from"):
        fresh.predict(1, api_name="/pick_branch")
    assert "No Δ-tokens yet" in fresh.predict(api_name="/inspect")[0]  # a plain message, not an error
    with pytest.raises(AppError, match="No Δ-tokens yet"):
        fresh.predict(1, 3, api_name="/set_token")
    fresh.predict(1, api_name="/step")
    with pytest.raises(AppError, match=r"out of range: gridworld has actions 0\.\.4"):
        fresh.predict(99, 8, api_name="/futures")
    with pytest.raises(AppError, match="must be between 1 and 16, got 100"):
        fresh.predict(-1, 100, api_name="/futures")
    fresh.predict(0, 4, api_name="/futures")
    with pytest.raises(AppError, match="branch must be between 1 and 4, got 9") as e:
        fresh.predict(9, api_name="/pick_branch")
    assert "Traceback" not in str(e.value)
    with pytest.raises(AppError, match="position must be between 1 and 4, got 9"):
        fresh.predict(9, 3, api_name="/set_token")
    with pytest.raises(AppError, match="token must be between 0 and 63"):
        fresh.predict(1, 5000, api_name="/set_token")
    with pytest.raises(AppError, match="whole number"):
        fresh.predict(1, "abc", api_name="/set_token")
    fresh.predict(1, 3, api_name="/set_token")  # a token edit discards the futures sampled before it
    with pytest.raises(AppError, match="No futures to pick from"):
        fresh.predict(1, api_name="/pick_branch")


def test_token_maps_of_both_tokenizers(client, tiny_run):
    reset(client, tiny_run)
    note, delta, iris = client.predict("fresh rollout", 0, 5, -1, None, None, 0, api_name="/token_maps")
    assert delta["label"] == "Δ-tokenizer: 4 maps" and len(delta["value"]) == 4
    assert iris["label"] == "IRIS tokenizer: 16 maps" and len(iris["value"]) == 16
    assert all(image_size(m["image"]) == (64 * MAP_SCALE,) * 2 for m in delta["value"] + iris["value"])
    assert "fixed patch" in note


def test_the_release_route_ends_a_hold_at_once(server):
    """A page's key-up posts the hold's id to a plain route (no queue); the lane checks it every step."""
    import httpx

    from app.webui.lane import RELEASES

    r = httpx.post(server[0].rstrip("/") + "/deltaplay/release/hold-abc", timeout=10)
    assert r.status_code == 200 and r.json() == {"ok": True}
    assert "hold-abc" in RELEASES and "hold-xyz" not in RELEASES


def test_the_hold_lane_streams_steps_and_refuses_bad_input_plainly(server, tiny_run):
    """The lane of a page with a dream streams its steps until released; an unknown lane, a move outside the env
    and an overlong hold id get a refusal in plain words, never a traceback."""
    import json

    import httpx

    from app.engine import ModelBundle, PlaySession
    from app.webui.common import TabState
    from app.webui.lane import LANES

    base = server[0].rstrip("/")
    st = TabState(str(tiny_run))
    st.session = PlaySession(ModelBundle.load(tiny_run, device="cpu"), shadow=True)
    st.session.reset(2)
    lane = LANES.open(st)
    try:
        with httpx.Client(timeout=30) as http:
            steps = []
            with http.stream("POST", f"{base}/deltaplay/hold/{lane}/1/hold-c1") as r:
                assert r.status_code == 200
                for line in r.iter_lines():
                    msg = json.loads(line)
                    if "step" in msg:
                        steps.append(msg["step"])
                        if len(steps) == 3:
                            http.post(f"{base}/deltaplay/release/hold-c1")
                    else:
                        assert msg == {"end": True}
            assert steps[:3] == [1, 2, 3] and len(steps) <= 5, steps
            for path, status, words in (("nolane/1/h", 404, "no dream on this page"),
                                        (f"{lane}/99/h", 400, "action of this env"),
                                        (f"{lane}/x1/h", 400, "action of this env"),
                                        (f"{lane}/1/{'h' * 65}", 400, "hold id")):
                r = http.post(f"{base}/deltaplay/hold/{path}")
                assert r.status_code == status and words in r.json()["error"], (path, r.text)
                assert "Traceback" not in r.text and "/" not in r.json()["error"]
    finally:
        st.close()
