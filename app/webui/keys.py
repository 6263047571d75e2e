"""Keyboard play in the page: a client-side queue so that no press is lost.

Every press (key or action button) goes into a queue in the page. While no step is in flight, the page
sends everything queued as one batch (the hidden ``#btn-keys`` event, endpoint ``/play_keys``) and the
server plays the batch in order; presses made meanwhile wait for the next batch. ``#pending-count`` shows
how many moves are still to be played.

A key held for ``HOLD_MS`` opens the held-key lane (app/webui/lane.py): the server plays the move again and
again at the dream's pace and streams each step's frames and stats line, which the page draws, until the key is
up: the page posts the hold's id to ``/deltaplay/release/<id>`` and the stream stops within a step. Then the
hidden ``#btn-sync`` event brings every widget to the dream's step. The browser's own key repeat is ignored.
"""
from __future__ import annotations

import json

from app.webui.guard import refuse, short

MAX_BATCH = 32  # moves one call plays; the page sends at most this many at once
TAKE_JS = "(st, keys) => [st, window.deltaplayKeys ? window.deltaplayKeys.take() : '']"
DONE_JS = "() => { if (window.deltaplayKeys) window.deltaplayKeys.done(true); }"
FAILED_JS = "() => { if (window.deltaplayKeys) window.deltaplayKeys.done(false); }"


def parse_keys(batch: str | None, n_actions: int) -> list[int]:
    """``"3,3,1"`` -> ``[3, 3, 1]``: the actions of one batch, each checked against the env's actions
    (an empty batch plays nothing: the page may send one after Enter dropped the queue)."""
    parts = [p.strip() for p in (batch or "").replace(" ", ",").split(",") if p.strip()]
    if len(parts) > MAX_BATCH:
        raise refuse(f"too many moves in one call: {len(parts):,} (at most {MAX_BATCH})")
    out = []
    for p in parts:
        if not p.isdigit() or int(p) >= n_actions:
            raise refuse(f"move {short(p)} is not an action of this env: use 0..{n_actions - 1}")
        out.append(int(p))
    return out


def keyboard_js(keymap: dict[str, int]) -> str:
    """The page script: keys and action buttons fill the move queue, which is sent a batch at a time.
    The live keymap is read from the hidden #keymap box (a checkpoint of another env changes it);
    ``keymap`` is the fallback."""
    return _SCRIPT.replace("__FALLBACK__", json.dumps(keymap)).replace("__MAX_BATCH__", str(MAX_BATCH))


_SCRIPT = """
() => {
  const fallback = __FALLBACK__;
  const names = {" ": "space", "Tab": "tab", "Enter": "enter", "ArrowUp": "up", "ArrowDown": "down",
                 "ArrowLeft": "left", "ArrowRight": "right"};
  const MAX_BATCH = __MAX_BATCH__, MAX_QUEUE = 256, HOLD_MS = 250, LOST_MS = 30000;
  const queue = [];
  let inflight = 0, sending = false, sentAt = 0, held = null;  // inflight: moves the server is playing
  let holds = 0, holding = null;  // the held-key stream now playing: {id, key, action}
  const api = window.deltaplayKeys = {queue: queue, sent: 0, answered: 0, holds: 0, released: "", laneSteps: 0};

  function playShown() { const f = document.getElementById("frame"); return f && f.offsetParent !== null; }
  function keymap() {
    const box = document.querySelector("#keymap textarea, #keymap input");
    if (box && box.value) { try { return JSON.parse(box.value); } catch (_) {} }
    return fallback;
  }
  function show() {
    const el = document.getElementById("pending-count");
    if (!el) return;
    const n = queue.length + inflight;
    el.textContent = n > 1 || (n === 1 && queue.length) ? n + " move" + (n > 1 ? "s" : "") + " pending" : "";
  }
  function pump() {
    const now = performance.now();
    if (sending) {
      if (now - sentAt < LOST_MS) return;
      sending = false;  // no answer for far too long: send the next batch anyway
      inflight = 0;
    }
    if (!queue.length && held && now - held.since >= HOLD_MS && playShown() && lane()) {
      holds += 1;
      api.holds = holds;
      const id = (window.crypto && crypto.randomUUID) ? crypto.randomUUID()
        : Math.random().toString(36).slice(2) + Math.random().toString(36).slice(2) + holds;
      holding = {id: id, key: held.key, action: held.action};
      sending = true;
      sentAt = now;
      stream(holding);
      return;
    }
    if (!queue.length) { show(); return; }
    const btn = document.getElementById("btn-keys");
    if (!btn) return;
    sending = true;
    sentAt = now;
    btn.click();
  }
  api.take = () => {
    const batch = queue.splice(0, MAX_BATCH);
    inflight = batch.length;
    api.sent += batch.length;
    show();
    return batch.join(",");
  };
  function lane() {
    const box = document.querySelector("#lane textarea, #lane input");
    return box ? box.value : "";
  }
  function draw(root, url) {  // the frame's own <img>: Gradio sets it again at the sync
    const img = document.querySelector(root + " img");
    if (img && url) img.src = url;
  }
  function sync() {  // every widget to the dream's step, through Gradio, once the lane is done
    const sb = document.getElementById("btn-sync");
    if (sb) sb.click(); else api.done(true);
  }
  async function stream(h) {  // the held key's lane: one JSON line per step (app/webui/lane.py)
    const url = new URL("deltaplay/hold/" + encodeURIComponent(lane()) + "/" + h.action + "/" +
                        encodeURIComponent(h.id), document.baseURI);
    try {
      const r = await fetch(url, {method: "POST", cache: "no-store"});
      if (!r.ok || !r.body) throw new Error("hold refused: " + r.status);
      const reader = r.body.getReader(), dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        buf += dec.decode(value, {stream: true});
        let i;
        while ((i = buf.indexOf("\\n")) >= 0) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 1);
          if (!line) continue;
          const m = JSON.parse(line);
          if (m.dream) { draw("#frame", m.dream); draw("#real", m.real); api.laneSteps += 1; }
          const p = m.stats && document.querySelector("#stats p");
          if (p) p.innerHTML = m.stats;  // the paragraph's content only: Gradio keeps the nodes it owns
        }
      }
    } catch (_) {}
    sentAt = performance.now();
    sync();
  }
  function release() {  // the held key is up (or another key is down): end the stream after its current step
    if (!holding || api.released === holding.id) return;
    api.released = holding.id;
    fetch(new URL("deltaplay/release/" + encodeURIComponent(holding.id), document.baseURI),
          {method: "POST", keepalive: true}).catch(() => {});
  }
  api.done = (ok) => {
    api.answered += inflight;
    inflight = 0;
    sending = false;
    holding = null;
    if (!ok) queue.length = 0;  // an error: the moves after it would land somewhere unexpected
    show();
    setTimeout(pump, 0);
  };
  function enqueue(action) {
    if (queue.length < MAX_QUEUE) queue.push(action);
    show();
    pump();
  }
  setInterval(pump, 40);

  document.addEventListener("keydown", (e) => {
    const t = e.target;
    if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable)) return;
    if (e.ctrlKey || e.metaKey || e.altKey || !playShown()) return;
    const key = names[e.key] || (e.key || "").toLowerCase();
    const map = keymap();
    if (Object.prototype.hasOwnProperty.call(map, key)) {
      e.preventDefault();
      if (e.repeat) return;  // a held key repeats at the dream's pace (pump), not the keyboard's
      if (holding) release();
      held = {key: key, action: map[key], since: performance.now()};
      enqueue(map[key]);
    } else if (key === "enter") {
      const btn = document.getElementById("btn-reset");
      if (!btn) return;
      e.preventDefault();
      queue.length = 0;  // a reset drops the moves not yet played
      held = null;
      release();
      show();
      btn.click();
    }
  });
  document.addEventListener("keyup", (e) => {
    const key = names[e.key] || (e.key || "").toLowerCase();
    if (held && held.key === key) held = null;
    if (holding && holding.key === key) release();
  });
  window.addEventListener("blur", () => { held = null; release(); });
  // Action buttons join the same queue, so a click between key presses keeps its place.
  document.addEventListener("click", (e) => {
    const b = e.isTrusted && e.target.closest ? e.target.closest("#action-buttons button") : null;
    const m = b && /^act-(\\d+)$/.exec(b.id);
    if (!m) return;
    e.preventDefault();
    e.stopPropagation();
    enqueue(parseInt(m[1], 10));
  }, true);
}
"""
