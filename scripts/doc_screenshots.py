"""The docs' pictures of the futures grid and the token inspector, in the web page and the window (the trained
GridWorld bundle), and of the token maps (the trained Crafter bundle: it has both tokenizers).

    python scripts/doc_screenshots.py [OUT_FOLDER=assets] [all|play|maps|window]
"""
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
import torch  # noqa: E402
from playwright import sync_api  # noqa: E402

from app.webui import app as webui  # noqa: E402

torch.set_num_threads(1)
T = 120_000
OUT = Path(sys.argv[1] if len(sys.argv) > 1 else "assets")
OUT.mkdir(parents=True, exist_ok=True)
TMP = tempfile.mkdtemp()


def clip_of(page, top_sel, bottom_sel, pad=8):
    a = page.locator(top_sel).bounding_box(); b = page.locator(bottom_sel).bounding_box()
    x0 = min(a["x"], b["x"]) - pad; y0 = a["y"] - pad
    x1 = max(a["x"] + a["width"], b["x"] + b["width"]) + pad; y1 = b["y"] + b["height"] + pad
    return dict(x=x0, y=y0, width=x1 - x0, height=y1 - y0)


def serve(ckpt):
    demo = webui.build_app(Path(ckpt), runs_dir=TMP + "/runs", gallery_dir=TMP + "/gallery", device="cpu")
    _, url = webui.launch(demo, port=None, block=False, quiet=True)
    return demo, url


def step(page, key, n):
    before = page.locator("#frame img").get_attribute("src")
    page.locator("body").click(position={"x": 5, "y": 5}); page.keyboard.press(key)
    page.wait_for_function("([s, b]) => document.querySelector('#frame img').src !== b && "
                           "document.querySelector('#stats').innerText.includes('step ' + s + ' ')", arg=[n, before], timeout=T)


def play_shots(b, seed: int, keys: list[str]) -> None:
    demo, url = serve("checkpoints/gridworld")
    page = b.new_page(viewport={"width": 1400, "height": 3000})
    page.goto(url); page.wait_for_selector("#frame img", timeout=T)
    page.wait_for_function("document.querySelector('#stats').innerText.includes('step 0')", timeout=T)
    page.locator("#seed input").fill(str(seed)); page.locator("#btn-reset").click()
    page.wait_for_timeout(2000)
    torch.manual_seed(seed)  # the server runs in this process: the dream samples as in the engine scan
    for i, k in enumerate(keys):
        step(page, k, i + 1)
    page.get_by_text("Futures: what could come next").click()
    for attempt in range(12):  # a state whose futures disagree somewhere (a coin may appear, or not)
        if attempt:
            step(page, "dsaw"[attempt % 4], len(keys) + attempt)
        page.locator("#futures-btn").click()
        page.wait_for_function("[...document.querySelectorAll('#futures-grid img')].length === 8 && "
                               "[...document.querySelectorAll('#futures-grid img')].every(i => i.complete && i.naturalWidth > 0)", timeout=T)
        page.wait_for_timeout(800)
        rows = [line.split("\t") for line in page.locator("#futures-table").inner_text().splitlines()[1:]]
        if len({r[1] for r in rows if len(r) > 1}) >= 2:
            break
    page.screenshot(path=str(OUT / "screenshot_futures.png"), clip=clip_of(page, "#frame", "#futures"))
    page.get_by_text("Futures: what could come next").click()
    page.get_by_text("Token inspector").click()
    page.wait_for_function("document.querySelector('#inspector-note').innerText.includes('Δ-tokens')", timeout=T)
    for row, col in [(r, c) for r in range(4) for c in range(2, 7)]:  # the first edit that visibly moves pixels
        current = page.locator(f"#inspector-table [data-testid='cell-{row}-1']").inner_text().split()[0]
        cell = page.locator(f"#inspector-table [data-testid='cell-{row}-{col}']")
        if cell.inner_text().split()[0] == current:
            continue
        cell.click()
        page.wait_for_timeout(500)
        note_before = page.locator("#inspector-note").inner_text()
        page.locator("#replace-token").click()
        page.wait_for_function("(n) => document.querySelector('#inspector-note').innerText !== n", arg=note_before,
                               timeout=T)
        note = page.locator("#inspector-note").inner_text()
        if float(note.split("changed by ")[1].split("/")[0]) >= 1.0:
            break
    page.wait_for_selector("#heat-map img", timeout=T)
    page.wait_for_timeout(1500)
    print(note)
    page.screenshot(path=str(OUT / "screenshot_inspector.png"), clip=clip_of(page, "#frame", "#inspector"))
    page.close(); demo.close()


def map_shots(b):
    demo, url = serve("checkpoints/crafter")
    page = b.new_page(viewport={"width": 1400, "height": 3000})
    page.goto(url); page.wait_for_selector("#frame img", timeout=T)
    page.get_by_role("tab", name="Tokenizers").click()
    page.locator("#btn-compare").click()
    page.wait_for_function("[...document.querySelectorAll('#tok-maps-iris img')].length === 16 && "
                           "[...document.querySelectorAll('#tok-maps-iris img')].every(i => i.complete && i.naturalWidth > 0)", timeout=T)
    page.wait_for_timeout(800)
    page.screenshot(path=str(OUT / "screenshot_token_maps.png"), clip=clip_of(page, "#tok-maps-note", "#tok-maps-iris"))
    page.close(); demo.close()


def window_shots() -> None:
    """The pygame window (SDL dummy driver): the grid of futures, then the inspector after the edit that moves
    the most pixels (a clear heat map)."""
    from app.engine import ModelBundle, PlaySession
    from app.pygame_window import PlayWindow

    torch.manual_seed(0)
    w = PlayWindow(PlaySession(ModelBundle.load("checkpoints/gridworld", device="cpu"), shadow=True, seed=3),
                   scale=6, seed=3)
    for k in "ddw":
        w.handle_key(k)
    w.handle_key("b")
    w.render()
    w.save_screenshot(str(OUT / "screenshot_window_futures.png"))
    w.handle_key("3")
    w.handle_key("v")
    best = (0.0, 0, "1")
    for pos in range(len(w.inspector.view.slots)):
        for key in "12345":
            w.handle_key(key)
            best = max(best, (w.inspector.changed, pos, key))
        w.handle_key("down")
    while w.inspector.position != best[1]:
        w.handle_key("down")
    w.handle_key(best[2])
    w.render()
    w.save_screenshot(str(OUT / "screenshot_window_inspector.png"))
    w.close()


what = sys.argv[2] if len(sys.argv) > 2 else "all"
if what in ("all", "window"):
    window_shots()
with sync_api.sync_playwright() as p:
    b = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=["--no-sandbox", "--disable-gpu"])
    if what in ("all", "play"):
        play_shots(b, seed=2, keys=["w", "d"])
    if what in ("all", "maps"):
        map_shots(b)
    b.close()
