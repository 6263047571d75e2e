"""`deltaplay bench page`: play through the web page, as a person does, while a training run goes.

A real server (``deltaplay ui``'s, on 127.0.0.1) opens the checkpoint; with ``--page-train PRESET`` a first page starts a
training run from its Train tab (Crafter, that preset, CPU) and the benchmark waits until the run is training.
Then headless Chromium loads a second page, and each repeat resets to a seed and holds a move key for ``--hold``
seconds: the figure is the steps the page showed per second of holding, beside the dream's own steps/s (the
stats line) and the training run's speed while the page was open (its log's step lines).

Needs the test extras (``pip install -e '.[dev]'``: playwright, gradio_client) and Chromium at ``/usr/bin/chromium``.
"""
from __future__ import annotations

import re
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

NAME = "page"
CHROMIUM = "/usr/bin/chromium"
RUN = "bench-page"
TRAIN_WAIT_S = 900.0  # collection of a cpu-preset run takes minutes before its first training step
BOTH_FRAMES = ("() => [document.querySelector('#frame img'), document.querySelector('#real img')]"
               ".every(i => i && i.complete && i.naturalWidth > 0)")
_STEP_LINE = re.compile(r"^(\S+ \S+) INFO epoch \d+ (\w+) step (\d+)/")


def _step(page) -> int:
    m = re.search(r"step (\d+) ", page.locator("#stats").inner_text())
    return int(m.group(1)) if m else -1


def _step_lines(log: Path) -> list[tuple[float, str, int]]:
    """(time, phase, step) of each step line of a training log (none while it does not exist)."""
    out = []
    for line in log.read_text(errors="replace").splitlines() if log.exists() else []:
        m = _STEP_LINE.match(line)
        if m:
            out.append((datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp(), m.group(2), int(m.group(3))))
    return out


def _training_steps(log: Path, since: float, until: float) -> dict[str, float]:
    """Steps per minute of each training phase whose step lines fall between two wall-clock times."""
    seen: dict[str, list[tuple[float, int]]] = {}
    for t, phase, step in _step_lines(log):
        if since <= t <= until:
            seen.setdefault(phase, []).append((t, step))
    return {phase: 60 * (pts[-1][1] - pts[0][1]) / (pts[-1][0] - pts[0][0])
            for phase, pts in seen.items() if len(pts) > 1 and pts[-1][0] > pts[0][0]}


def _next_step_line(log: Path, after: float, wait_s: float = 90.0) -> float:
    """The time of the training log's first step line after ``after`` (waiting for it), else now."""
    end = time.monotonic() + wait_s
    while time.monotonic() < end:
        later = [t for t, _, _ in _step_lines(log) if t > after]
        if later:
            return later[0]
        time.sleep(2)
    return time.time()


def _start_training(browser, url: str, preset: str, runs: Path) -> tuple[Any, Path]:
    """A second page starts a Crafter run of ``preset`` from its Train tab, as a person would; returns that page
    and the run's log once the run has made gradient steps."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url, wait_until="load")
    page.get_by_role("tab", name="Train").click()
    page.locator("#train-name").locator("input, textarea").first.fill(RUN)
    for root, value in (("#train-env", "crafter"), ("#train-preset", preset), ("#train-device", "cpu")):
        page.locator(f"{root} input").click()
        page.get_by_role("option", name=value, exact=True).first.click()
    page.locator("#train-frames input").fill("10000000")
    page.locator("#btn-train-start").click()
    page.wait_for_function("document.querySelector('#train-progress').innerText.includes('running')",
                           timeout=120_000)
    log = runs / RUN / "train.log"
    end = time.monotonic() + TRAIN_WAIT_S
    while time.monotonic() < end:  # wait for gradient steps: collection alone is not what a player competes with
        if any(phase != "collect" for _, phase, _ in _step_lines(log)):
            return page, log
        time.sleep(2)
    raise RuntimeError(f"the training run did not reach a training step within {TRAIN_WAIT_S:.0f} s")


def run_page(checkpoint: str | None, train_preset: str | None, hold_s: float, repeats: int) -> dict[str, Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise SystemExit("bench page needs playwright: pip install -e '.[dev]'") from None
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"bench page needs Chromium at {CHROMIUM}")
    from app.webui.app import build_app, launch

    runs = Path(tempfile.mkdtemp(prefix="bench-page-")) / "runs"
    demo = build_app(checkpoint, runs_dir=runs, device="cpu")
    jobs = demo.deltaplay["jobs"]
    out: dict[str, Any] = {"workload": NAME, "checkpoint": str(checkpoint or "bundled crafter"),
                           "training": train_preset, "hold_s": hold_s, "repeats": []}
    try:
        _, url = launch(demo, port=None, block=False, quiet=True)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            trainer, log = _start_training(browser, url, train_preset, runs) if train_preset else (None, None)
            opened = time.time()
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url, wait_until="load")
            page.wait_for_function(BOTH_FRAMES, timeout=120_000)
            for r in range(repeats):
                page.locator("#seed input").fill(str(100 + r))
                page.locator("#btn-reset").click()
                page.wait_for_function("(s) => { const t = document.querySelector('#stats').innerText;"
                                       " return t.includes('step 0 ') && t.includes('seed ' + s + ')'); }",
                                       arg=100 + r, timeout=60_000)
                page.locator("body").click(position={"x": 5, "y": 5})  # focus the page, not the seed box
                key = "d" if r % 2 == 0 else "a"
                page.keyboard.down(key)
                page.wait_for_timeout(hold_s * 1000)
                shown = _step(page)
                page.keyboard.up(key)
                rate = re.search(r"([\d.]+) steps/s", page.locator("#stats").inner_text())
                row = {"page_steps_per_s": shown / hold_s, "dream_steps_per_s": float(rate.group(1)) if rate else None}
                out["repeats"].append(row)
                page.wait_for_timeout(1000)
            if trainer is not None:  # the playing page is told that another page's run is training
                out["player_told"] = f"A training run is going: {RUN}" in page.locator("#train-status").inner_text()
            browser.close()
        if log is not None:  # its log has a step line every half minute: from one before the page to one after
            closed = time.time()
            out["training_steps_per_min"] = _training_steps(log, opened - 60, _next_step_line(log, closed))
    finally:
        jobs.shutdown()
        demo.close()
    rates = [r["page_steps_per_s"] for r in out["repeats"]]
    out["page_steps_per_s"] = statistics.median(rates) if rates else None
    return out


def run(args) -> int:
    """``deltaplay bench page``: the figures as a table, and as JSON where ``--json`` says."""
    import json

    out = run_page(args.checkpoint, args.page_train, args.hold, args.repeats)
    print(report(out))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1))
        print(f"wrote {args.json}")
    return 0


def report(out: dict[str, Any]) -> str:
    rows = [f"play through the page ({out['checkpoint']}; training: {out['training'] or 'none'}; "
            f"a key held {out['hold_s']:.0f} s per repeat)"]
    for i, r in enumerate(out["repeats"]):
        rows.append(f"  repeat {i + 1}: {r['page_steps_per_s']:.1f} steps/s through the page, the dream's own "
                    f"{r['dream_steps_per_s']} steps/s")
    rows.append(f"  median: {out['page_steps_per_s']:.1f} steps/s through the page")
    if "training_steps_per_min" in out:
        rows.append(f"  the training run meanwhile (steps/min per phase): {out['training_steps_per_min']}")
    if "player_told" in out:
        rows.append(f"  the playing page says a training run is going: {'yes' if out['player_told'] else 'NO'}")
    return "\n".join(rows)
