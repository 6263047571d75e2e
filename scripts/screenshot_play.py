"""Screenshot of the Play tab on the bundled Crafter checkpoint after some key presses (the README image).

    python scripts/screenshot_play.py assets/screenshot_play_crafter.png dddss
"""
import sys, tempfile
from playwright import sync_api
from app.webui import app as webui
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic"]
tmp = tempfile.mkdtemp()
demo = webui.build_app(None, runs_dir=tmp + "/runs", gallery_dir=tmp + "/gallery", device="cpu")
_, url = webui.launch(demo, port=None, block=False, quiet=True)
with sync_api.sync_playwright() as p:
    b = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=ARGS)
    page = b.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url, wait_until="load")
    page.wait_for_selector("#frame img", timeout=60000)
    page.wait_for_function("document.querySelector('#stats').innerText.includes('step 0')", timeout=60000)
    page.mouse.click(700, 20)
    for i, k in enumerate(sys.argv[2]):
        page.keyboard.press(k)
        page.wait_for_function(f"document.querySelector('#stats').innerText.includes('step {i + 1} ')", timeout=60000)
    page.wait_for_timeout(1500)
    page.screenshot(path=sys.argv[1], full_page=True)
    b.close()
demo.close()
