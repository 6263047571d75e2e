"""The web UI in a real browser (Playwright + the system Chromium, headless) on a live in-process
server: keyboard play, I-token toggle, GIF download, tokenizer comparison, a tiny training run started
and stopped from the Train tab, two pages playing independently, the futures grid and the token
inspector, and no request leaving 127.0.0.1.
Saves a screenshot of each tab (test-artifacts/; assets/ with DELTAPLAY_UPDATE_ASSETS=1)."""
from __future__ import annotations

import io
import os
import re
from urllib.parse import urlparse

import numpy as np
import pytest
from PIL import Image

from app.webui import app as webui
from app.webui.common import SCALE
from app.webui.futures_panel import FUTURE_SCALE

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# Screenshots are test artifacts (test-artifacts/, git-ignored); DELTAPLAY_UPDATE_ASSETS=1 refreshes the
# README's copies in assets/ instead.
from helpers import REPO as _REPO, download_gif
ASSETS = _REPO / ("assets" if os.environ.get("DELTAPLAY_UPDATE_ASSETS") == "1" else "test-artifacts")
T = 60_000  # ms; generous, the CI machine is shared (no timed assertions: these are only deadlines)


@pytest.fixture(scope="module")
def server(tiny_run, tmp_path_factory):
    run = tiny_run
    gallery = tmp_path_factory.mktemp("browser_gallery")
    runs = tmp_path_factory.mktemp("browser_runs")
    mp = pytest.MonkeyPatch()
    mp.setenv("OMP_NUM_THREADS", "1")  # the Train tab's child process: one thread on a shared 2-core CI box
    demo = webui.build_app(run, runs_dir=runs, gallery_dir=gallery, device="cpu")
    _, url = webui.launch(demo, port=None, block=False, quiet=True)
    yield url, runs
    demo.deltaplay["jobs"].shutdown()
    demo.close()
    mp.undo()


def open_page(browser, url: str, hosts: set[str]):
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page.on("request", lambda r: hosts.add(urlparse(r.url).netloc) if urlparse(r.url).scheme in ("http", "https", "ws", "wss") else None)
    page.goto(url, wait_until="load")
    page.wait_for_selector("#frame img", timeout=T)  # the page load resets a dream
    page.wait_for_function("document.querySelector('#stats').innerText.includes('step 0')", timeout=T)
    return page


def src(page, selector: str) -> str:
    return page.locator(selector).get_attribute("src") or ""


def press_and_wait(page, key: str, step: int) -> None:
    """Press a key on the page body and wait for the dream frame and step counter to move on."""
    before = src(page, "#frame img")
    page.locator("body").click(position={"x": 5, "y": 5})  # focus the page, not a widget
    page.keyboard.press(key)
    page.wait_for_function(
        "([s, b]) => { const i = document.querySelector('#frame img'); const t = document.querySelector('#stats');"
        " return i && i.src !== b && t.innerText.includes('step ' + s + ' '); }", arg=[step, before], timeout=T)


def shot(page, tab: str, artifact_only: bool = False) -> None:
    """``artifact_only``: never into assets/ (the docs' pictures of it come from a trained bundle,
    scripts/doc_screenshots.py, not from this test's tiny model)."""
    folder = _REPO / "test-artifacts" if artifact_only else ASSETS
    folder.mkdir(exist_ok=True)
    page.screenshot(path=str(folder / f"screenshot_{tab}.png"), full_page=True)


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def test_browser_end_to_end(server, browser, tmp_path):
    url, runs = server
    hosts: set[str] = set()
    page = open_page(browser, url, hosts)
    play_and_export(page, browser, url, hosts, tmp_path)
    comparison_tabs(page)
    train_stop_resume(page, runs)
    page.close()
    assert hosts and all(h.split(":")[0] == "127.0.0.1" for h in hosts), hosts


def play_and_export(page, browser, url: str, hosts: set[str], tmp_path) -> None:
    """Keys, the I-token switch, a clip exported and downloaded, a second page with its own dream."""
    # Keyboard play: D/right, S/down in GridWorld (keys from model.data.envs.keymap_for).
    press_and_wait(page, "d", 1)
    press_and_wait(page, "ArrowDown", 2)
    # Typing in a text box must not move the player.
    page.locator("#seed input").fill("7")
    page.locator("#seed input").press("d")
    assert "step 2 " in page.locator("#stats").inner_text()

    # I-tokens off: the world model is swapped, the step counter continues.
    page.locator("#itok input").uncheck()
    page.wait_for_function("document.querySelector('#stats').innerText.includes('I-tokens off')", timeout=T)
    press_and_wait(page, "w", 3)
    assert "I-tokens off" in page.locator("#stats").inner_text()

    # Start a clip, take a few steps, export, download the GIF.
    page.locator("#btn-clip").click()
    page.wait_for_function("document.querySelector('#stats').innerText.includes('clip from step 3')", timeout=T)
    press_and_wait(page, "a", 4)
    press_and_wait(page, "s", 5)
    gif = download_gif(page, tmp_path / "play.gif", T)
    assert gif.read_bytes()[:6] in (b"GIF87a", b"GIF89a")
    shot(page, "play")

    # A second page plays its own dream; the first one's counter does not move.
    other = open_page(browser, url, hosts)
    press_and_wait(other, "d", 1)
    assert "step 5 " in page.locator("#stats").inner_text()
    press_and_wait(page, "d", 6)
    assert "step 1 " in other.locator("#stats").inner_text()
    other.close()


def comparison_tabs(page) -> None:
    """The Tokenizers and I-tokens tabs, each with its pictures and numbers."""
    # Tokenizers: original, IRIS-style and Δ reconstructions, and the metrics table.
    open_tab(page, "Tokenizers")
    page.locator("#btn-compare").click()
    for sel in ("#tok-original img", "#tok-iris img", "#tok-delta img"):
        page.wait_for_selector(sel, timeout=T)
    table = page.locator("#tok-metrics")
    table.get_by_text("bits/frame").wait_for(timeout=T)
    assert "Δ-tokenizer" in table.inner_text() and "IRIS-style" in table.inner_text()
    shot(page, "tokenizers")

    # I-tokens: side-by-side rollout with its error plot.
    open_tab(page, "I-tokens")
    page.locator("#btn-itok-run").click()
    for sel in ("#it-real img", "#it-with img", "#it-without img"):
        page.wait_for_selector(sel, timeout=T)
    page.wait_for_function("document.querySelector('#it-summary').innerText.includes('steps')", timeout=T)
    shot(page, "itokens")


def train_stop_resume(page, runs) -> None:
    """A tiny run started, stopped, resumed and stopped from the Train tab; the Gallery lists the GIF."""
    # Train: start a tiny GridWorld run, watch its progress advance, stop it.
    open_tab(page, "Train")
    page.locator("#train-name").locator("input, textarea").first.fill("ui-run")
    choose(page, "#train-env", "gridworld")
    choose(page, "#train-preset", "tiny")
    choose(page, "#train-device", "cpu")
    page.locator("#train-frames input").fill("1000000")  # keeps running until stopped
    page.locator("#btn-train-start").click()
    progress = page.locator("#train-progress")
    page.wait_for_function("document.querySelector('#train-progress').innerText.includes('running')", timeout=T)
    page.wait_for_function(
        "/epoch [1-9]/.test(document.querySelector('#train-progress').innerText)", timeout=300_000)
    assert re.search(r"frames [1-9][\d,]* / 1,000,000", progress.inner_text())
    page.wait_for_function(  # progress advances: a second epoch (the loss plots then have lines)
        "/epoch ([2-9]|\\d\\d)/.test(document.querySelector('#train-progress').innerText)", timeout=300_000)
    page.locator("#train-log textarea").wait_for(timeout=T)
    shot(page, "train")
    page.locator("#btn-train-stop").click()
    page.wait_for_function("document.querySelector('#train-progress').innerText.includes('stopped')", timeout=T)
    assert (runs / "ui-run" / "metrics.jsonl").exists()
    # Resume continues from the checkpoint the stop wrote; stop it again.
    page.locator("#btn-train-resume").click()
    page.wait_for_function(
        "document.querySelector('#train-log textarea').value.includes('resumed at epoch')", timeout=300_000)
    page.locator("#btn-train-stop").click()
    page.wait_for_function("document.querySelector('#train-progress').innerText.includes('stopped')", timeout=T)

    # Gallery: the exported GIF is listed.
    open_tab(page, "Gallery")
    page.wait_for_selector("#gallery img", timeout=T)
    page.wait_for_function("[...document.querySelectorAll('#gallery img')].every(i => i.complete && i.naturalWidth > 0)"
                           " && document.querySelector('#gallery-files').innerText.includes('play-')", timeout=T)
    page.wait_for_timeout(800)  # let the fade-in finish before the screenshot
    shot(page, "gallery")


def choose(page, root: str, value: str) -> None:
    """Pick an option of a Gradio dropdown."""
    page.locator(f"{root} input").click()
    page.get_by_role("option", name=value, exact=False).first.click()


def pixels(page, url: str, scale: int) -> np.ndarray:
    """An upscaled frame the page shows, fetched by its URL, back at 64x64."""
    body = page.request.get(url).body()
    return np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))[::scale, ::scale]


def images_loaded(page, selector: str, n: int) -> None:
    page.wait_for_function(
        "([sel, n]) => { const im = [...document.querySelectorAll(sel)];"
        " return im.length === n && im.every(i => i.complete && i.naturalWidth > 0); }", arg=[selector, n], timeout=T)


def test_browser_futures_and_inspector(server, browser):
    url, _ = server
    hosts: set[str] = set()
    page = open_page(browser, url, hosts)
    press_and_wait(page, "d", 1)

    # Futures: 8 sampled next frames in a grid; clicking branch 3 makes it the dream frame.
    page.get_by_text("Futures: what could come next").click()
    page.locator("#futures-btn").click()
    images_loaded(page, "#futures-grid img", 8)
    page.locator("#futures-table").get_by_text("log p").wait_for(timeout=T)
    assert "8 futures of step 1" in page.locator("#futures-note").inner_text()
    shot(page, "futures", artifact_only=True)
    branch = page.locator("#futures-grid img").nth(2)
    chosen = pixels(page, branch.get_attribute("src"), FUTURE_SCALE)
    before = src(page, "#frame img")
    branch.click()
    page.wait_for_function(
        "(b) => document.querySelector('#frame img').src !== b &&"
        " document.querySelector('#stats').innerText.includes('continued from branch 3')", arg=before, timeout=T)
    assert np.array_equal(pixels(page, src(page, "#frame img"), SCALE), chosen)
    images_loaded(page, "#futures-grid img", 0)  # those futures are spent

    # Token inspector: the current tokens and their alternatives; replacing one redraws the frame and
    # shows where it changed. The tiny model decodes some codes alike, so try positions until one moves it.
    page.get_by_text("Token inspector").click()
    page.wait_for_function("document.querySelector('#inspector-note').innerText.includes('Step 2: 4 Δ-tokens')",
                           timeout=T)
    first = pixels(page, src(page, "#frame img"), SCALE)
    for row in range(4):
        before = src(page, "#frame img")
        click_alternative(page, row)
        page.locator("#replace-token").click()
        page.wait_for_function(
            "([b, k]) => document.querySelector('#frame img').src !== b &&"
            " document.querySelector('#inspector-note').innerText.includes('token ' + k + ' ')",
            arg=[before, row + 1], timeout=T)
        page.wait_for_selector("#heat-map img", timeout=T)
        if not np.array_equal(pixels(page, src(page, "#frame img"), SCALE), first):
            break
    else:
        pytest.fail("no token swap changed the dream frame")
    heat = pixels(page, src(page, "#heat-map img"), 1)
    assert heat.max() > 0, "the heat map lights up where the frame changed"
    assert "changed by" in page.locator("#inspector-note").inner_text()
    shot(page, "inspector", artifact_only=True)
    page.close()
    assert hosts and all(h.split(":")[0] == "127.0.0.1" for h in hosts), hosts


def click_alternative(page, row: int) -> None:
    """Click the first alternative of table row ``row`` that differs from the token there now; the
    position and token menus follow."""
    def cell(col: int):
        return page.locator(f"#inspector-table [data-testid='cell-{row}-{col}']")

    texts = [cell(c).inner_text().strip() for c in range(7)]  # position, token now, 5 alternatives
    current = texts[1].split()[0]
    col = next(i for i, t in enumerate(texts) if i >= 2 and t and t.split()[0] != current)
    cell(col).click()
    page.wait_for_function(
        "([k, tok]) => { const p = document.querySelector('#inspector-position input');"
        " const t = document.querySelector('#inspector-token input');"
        " return p && t && p.value === String(k) && t.value.startsWith(tok + ' '); }",
        arg=[row + 1, texts[col].split()[0]], timeout=T)
