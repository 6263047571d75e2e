"""Every named endpoint of the web UI (as gradio_client's view_api lists them) called with hostile inputs
against a live server, while a tiny training run started from the Train tab's endpoint holds a core: huge
strings, negative and huge numbers, NaN, wrong types, None, files that are not images or not uploads, and
4-way bursts on the heavy endpoints. Every call must be answered within 30 s, by a result or a plain
``gr.Error``: no unexpected exception on the server, no traceback, no server path. The server answers
afterwards. The call count and timings are printed (pytest -s)."""
from __future__ import annotations

import random
import sys
import time
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from app.webui import app as webui
from app.webui.guard import SOMETHING_WENT_WRONG
from helpers import REPO

pytestmark = pytest.mark.slow
ANSWER_S = 30.0
MIN_CALLS = 300
PER_ARGUMENT = 3  # hostile values per argument, a seeded draw from the lists below
TRAIN_RUN = "fuzz-run"
# The Train form of the run the fuzz keeps going (every other train_start is then refused: one at a time).
TRAIN_FORM = [TRAIN_RUN, "gridworld", "tiny", "cpu", "delta", True, False, 1_000_000, 0]
STRINGS = ["", "A" * 1_000_000, "../../../../etc/passwd", "/", "\x00\x01\x7f", "😀" * 2000, "-1", "1e999",
           "<script>alert(1)</script>", "' OR 1=1 --", "C:\\Windows\\system32", "%s%n%x", "\u202eevil"]
NUMBERS = [-1, 0, -(10**18), 10**18, 2**63, 1e308, -1e308, 0.5, -0.000001]
RAW_NUMBERS = ["NaN", "Infinity", "-Infinity", "1e999"]  # JSON only a raw request can send (httpx refuses them)
OTHERS = [None, True, False, [1, 2, 3], {"a": 1}, [], {}]
HEAVY = {  # endpoint: valid arguments that make it work hard, for the bursts
    "/tokenizer_batch": ["fresh rollout", -1, -1, 1024],
    "/itoken_rollout": [200, -1, 1.0, "random"],
    "/compare_tokenizers": ["fresh rollout", -1, 255, -1, None, None, 0],
    "/token_maps": ["fresh rollout", -1, 255, -1, None, None, 0],
    "/futures": [-1, 16],
    "/export_gif": [],
    "/train_start": TRAIN_FORM,
}


@pytest.fixture(scope="module")
def server(tiny_run, tmp_path_factory):
    runs = tmp_path_factory.mktemp("fuzz_runs")
    mp = pytest.MonkeyPatch()
    mp.setenv("OMP_NUM_THREADS", "1")
    demo = webui.build_app(tiny_run, runs_dir=runs, device="cpu")
    _, url = webui.launch(demo, port=None, block=False, quiet=True)
    yield url, demo, runs
    demo.deltaplay["jobs"].shutdown()
    demo.close()
    mp.undo()


def files(folder: Path) -> list[Any]:
    """Upload values: files that are not images, a real image, a path on the server, not a file at all."""
    text = folder / "notes.png"
    text.write_text("this is text, not pixels")
    empty = folder / "empty.gif"
    empty.write_bytes(b"")
    fake = folder / "fake.png"
    fake.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40)
    big = folder / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (2000, 1500, 3), dtype=np.uint8)).save(big)
    return [handle_file(str(p)) for p in (text, empty, fake, big)] + [
        None, "not a file", 42, {"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}},
        {"path": str(REPO / "pyproject.toml")}]


def hostile(param: dict[str, Any], uploads: list[Any]) -> list[Any]:
    if param["component"] == "File":
        return uploads
    return STRINGS + NUMBERS + OTHERS


def valid(name: str, params: list[dict[str, Any]], tiny_run: Path) -> list[Any]:
    """Arguments the endpoint accepts, to vary one at a time."""
    if name == "/train_start":
        return list(TRAIN_FORM)
    out = []
    for p in params:
        v = p.get("parameter_default")
        if p["component"] == "Dropdown" and v is None:
            v = 1  # positions, tokens, run names: something of the right kind
        out.append(str(tiny_run) if p.get("parameter_name") == "checkpoint" else v)
    return out


class Calls:
    """Every call made, how long it took, and what came back that must not."""

    def __init__(self, server_paths: list[str]):
        self.paths = server_paths
        self.count, self.times, self.problems = 0, [], []
        self.outcomes: dict[str, int] = {"result": 0, "refused": 0, "busy": 0}

    def leaks(self, text: str) -> list[str]:
        bad = [p for p in self.paths if p in text]
        if "Traceback" in text or 'File "' in text or SOMETHING_WENT_WRONG in text:
            bad.append("traceback or unexpected error")
        return bad

    def check(self, name: str, args: list[Any], job: Any, sent: float | None = None) -> None:
        """Wait for ``job`` (sent at ``sent``, default now) and look at its answer."""
        t0 = time.monotonic() if sent is None else sent
        self.count += 1
        try:
            out = job.result(timeout=max(1.0, ANSWER_S - (time.monotonic() - t0)))
            self.outcomes["result"] += 1
            texts = strings(out)
        except AppError as e:
            message = str(e.message)
            self.outcomes["busy" if "busy" in message else "refused"] += 1
            texts = [message]
            if not e.message or "has not enabled verbose error reporting" in str(e):
                self.problems.append(f"{name}: an error without a plain message")
        except (FutureTimeout, TimeoutError):
            self.problems.append(f"{name}: no answer within {ANSWER_S:.0f} s")
            return
        finally:
            self.times.append(time.monotonic() - t0)
        for text in texts:
            for leak in self.leaks(text):
                self.problems.append(f"{name}({short(args)}): {leak} in {text[:200]!r}")


def strings(value: Any) -> list[str]:
    """The texts of a response (file payloads are links to gradio's cache, not messages)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        if "path" in value or "url" in value or value.get("__type__") == "update" and "choices" in value:
            return []
        return [t for v in value.values() for t in strings(v)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in strings(v)]
    return []


def raw_call(calls: Calls, url: str, name: str, args: list[str]) -> None:
    """One call over the plain HTTP API with a body gradio_client cannot send (NaN, Infinity)."""
    t0 = time.monotonic()
    calls.count += 1
    body = '{"data": [' + ", ".join(args) + "]}"
    try:
        r = httpx.post(f"{url}gradio_api/call{name}", content=body, headers={"content-type": "application/json"},
                       timeout=ANSWER_S)
        text = r.text
        if r.status_code == 200:
            text = httpx.get(f"{url}gradio_api/call{name}/{r.json()['event_id']}", timeout=ANSWER_S).text
        calls.outcomes["refused" if "event: error" in text or r.status_code != 200 else "result"] += 1
    except httpx.TimeoutException:
        calls.problems.append(f"{name}: no answer within {ANSWER_S:.0f} s")
        return
    finally:
        calls.times.append(time.monotonic() - t0)
    if "event: error" in text and '"error": null' in text:
        calls.problems.append(f"{name}: an error without a plain message")
    for leak in calls.leaks(text):
        calls.problems.append(f"{name}({body[:60]}): {leak} in {text[:200]!r}")


def short(args: list[Any]) -> str:
    return ", ".join(repr(a)[:30] for a in args)


def client(url: str) -> Client:
    return Client(url, analytics_enabled=False, verbose=False, download_files=False)


def start_training(c: Client, runs: Path) -> None:
    c.predict(*TRAIN_FORM, api_name="/train_start")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (runs / TRAIN_RUN / "metrics.jsonl").exists():
        if "**running**" not in c.predict(TRAIN_RUN, api_name="/train_refresh")[2]:
            pytest.fail("the fuzz's training run is not running")
        time.sleep(1)  # until the child has imported torch and works (collects or trains)


def test_every_endpoint_answers_hostile_input_plainly(server, tiny_run, tmp_path):
    url, demo, runs = server
    main = client(url)
    api = main.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert len(api) >= 20, sorted(api)
    calls = Calls([str(runs), str(tiny_run), str(REPO), str(tmp_path), sys.prefix])
    uploads = files(tmp_path)
    rng = random.Random(0)
    main.predict(str(tiny_run), 3, True, True, 16, 1.0, "human", api_name="/reset")
    start_training(main, runs)
    t0 = time.monotonic()

    for name, ep in sorted(api.items()):  # each argument in turn gets each hostile value, the others valid
        params = ep["parameters"]
        base = valid(name, params, tiny_run)
        if not params:
            for _ in range(4):
                calls.check(name, [], main.submit(api_name=name))
        for i, p in enumerate(params):
            for value in rng.sample(hostile(p, uploads), k=min(PER_ARGUMENT, len(hostile(p, uploads)))):
                args = base[:i] + [value] + base[i + 1:]
                calls.check(name, args, main.submit(*args, api_name=name))
        for _ in range(2):  # everything hostile at once
            args = [rng.choice(hostile(p, uploads)) for p in params]
            calls.check(name, args, main.submit(*args, api_name=name))
        main.predict(str(tiny_run), 3, True, True, 16, 1.0, "human", api_name="/reset")  # a session to work on

    for name, args in (("/step", ["{}"]), ("/futures", ["-1", "{}"]), ("/itoken_rollout", ["{}", "0", "1.0", '"random"']),
                       ("/pick_branch", ["{}"]), ("/tokenizer_batch", ['"fresh rollout"', "{}", "-1", "32"])):
        for number in RAW_NUMBERS:
            raw_call(calls, url, name, [a.replace("{}", number) for a in args])
    raw_call(calls, url, "/step", ["1, "])  # not even JSON

    clients = [client(url) for _ in range(4)]
    for c in clients:
        c.predict(str(tiny_run), -1, True, True, 16, 1.0, "human", api_name="/reset")
        c.predict("4,4,2", api_name="/play_keys")
    for name, args in HEAVY.items():  # 4-way bursts while the training run works
        for _ in range(2):
            sent = time.monotonic()
            jobs = [c.submit(*args, api_name=name) for c in clients]
            for job in jobs:
                calls.check(name, args, job, sent)
    fuzz_s = time.monotonic() - t0

    times = sorted(calls.times)
    print(f"\nfuzz: {calls.count} calls to {len(api)} endpoints in {fuzz_s:.0f} s; {calls.outcomes}; "
          f"answer time median {times[len(times) // 2]:.2f} s, max {times[-1]:.2f} s")
    assert calls.count >= MIN_CALLS
    assert not calls.problems, "\n".join(calls.problems[:20])
    assert demo.unexpected == [], demo.unexpected
    assert calls.outcomes["busy"] > 0, "the bursts met a busy gate"
    # The server answers afterwards, and the training run still goes.
    out = main.predict(str(tiny_run), 5, True, True, 16, 1.0, "human", api_name="/reset")
    assert "**step** 0" in out[2]
    assert "**step** 1" in main.predict(1, api_name="/step")[2]
    assert "**running**" in main.predict(TRAIN_RUN, api_name="/train_refresh")[2]
    main.predict(TRAIN_RUN, api_name="/train_stop")
