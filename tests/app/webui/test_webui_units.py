"""The web UI's parts that need no server: the rolling GIF buffer and its clip, the move batches of the key
queue, the input checks, the path scrubber, the busy gate, one training run at a time, the stats line."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import gradio as gr

from app.recorder import HEADER_PX, FrameRecorder
from app.webui import guard
from app.webui.common import signed
from app.webui.jobs import GALLERY, JobError, JobManager, TrainSpec, train_threads
from app.webui.keys import MAX_BATCH, parse_keys


def frame(v: int) -> np.ndarray:
    return np.full((8, 8, 3), v, np.uint8)


def test_rolling_buffer_keeps_the_last_steps_and_restarts_on_a_reset():
    rec = FrameRecorder(keep=5)
    for t in range(8):
        rec.add(t, dream=frame(t), real=frame(100 + t))
    assert rec.steps == [3, 4, 5, 6, 7] and len(rec) == 5 and not rec.recording
    rec.add(7, dream=frame(50))  # the same step again (a token edit) replaces it
    assert rec.steps[-1] == 7 and rec.columns[-1]["dream"][0, 0, 0] == 50
    rec.start()  # a clip from step 7
    rec.add(8, dream=frame(8))
    assert rec.recording and rec.clip_from == 7 and len(rec) == 2
    images = rec.compose(["dream", "real"], scale=1)
    assert len(images) == 2 and images[0].shape[0] > HEADER_PX + 8  # the header names the two columns
    rec.add(0, dream=frame(0))  # a reset: a new buffer, no clip
    assert rec.steps == [0] and rec.clip_from is None and not rec.recording


def test_recorder_without_keep_records_only_between_start_and_stop():
    rec = FrameRecorder()
    rec.add(0, dream=frame(0))
    assert len(rec) == 0
    rec.start()
    rec.add(1, dream=frame(1))
    rec.add(2, dream=frame(2))
    assert rec.stop() == 2 and len(rec) == 2
    rec.add(3, dream=frame(3))
    assert len(rec) == 2


def test_parse_keys():
    assert parse_keys("1,1, 3 2", 5) == [1, 1, 3, 2]
    assert parse_keys("", 5) == [] and parse_keys(None, 5) == []
    for bad in ("5", "-1", "1.5", "x", "1;2"):
        with pytest.raises(gr.Error, match="is not an action of this env: use 0..4"):
            parse_keys(bad, 5)
    with pytest.raises(gr.Error, match="Too many moves"):
        parse_keys(",".join(["1"] * (MAX_BATCH + 1)), 5)


def test_checks_answer_in_plain_words():
    assert guard.seed_of(-1) is None and guard.seed_of(None) is None and guard.seed_of(7.0) == 7
    for bad, why in (("abc", "whole number"), (1.5, "whole number"), (float("nan"), "whole number"),
                     (2**40, "between"), (True, "whole number")):
        with pytest.raises(gr.Error, match=why):
            guard.seed_of(bad)
    with pytest.raises(gr.Error, match=r"too long: 1,000,000 characters"):
        guard.text("A" * 1_000_000, "the name")
    with pytest.raises(gr.Error) as e:
        guard.one_of("A" * 1_000_000, "the controller", ["human", "agent"])
    assert len(e.value.message) < 200  # a huge value is not echoed back
    with pytest.raises(gr.Error, match="must be a number between 0.1 and 2"):
        guard.number("hot", "the temperature", 0.1, 2.0)


def test_scrubber_shortens_server_paths(tmp_path):
    runs, gallery = tmp_path / "runs", tmp_path / "runs" / "gallery"
    scrub = guard.Scrubber(runs, gallery)
    assert scrub(f"run folder {runs}/x already exists") == "run folder runs/x already exists"
    assert scrub(f"wrote {gallery}/a.gif") == "wrote gallery/a.gif"
    assert scrub("/opt/models/crafter/checkpoints/last has no world model") == \
        "…/checkpoints/last has no world model"
    assert scrub("frames 12 / 100 at 3.0 frames/s, runs/crafter, 0..4, http://127.0.0.1:7860/x") == \
        "frames 12 / 100 at 3.0 frames/s, runs/crafter, 0..4, http://127.0.0.1:7860/x"
    assert scrub('Traceback (most recent call last):\n  File "/x/y.py", line 3') == guard.SOMETHING_WENT_WRONG
    assert len(scrub("x" * 10_000)) <= guard.MAX_MESSAGE + 1


def test_gate_refuses_beyond_its_queue_at_once():
    gate = guard.Gate("a test", running=1, waiting=1, wait_s=0.5)
    entered, release = threading.Event(), threading.Event()
    outcomes: list[str] = []

    def hold() -> None:
        with gate():
            entered.set()
            release.wait(5)

    def call() -> None:
        try:
            with gate():
                outcomes.append("ran")
        except gr.Error as e:
            outcomes.append(e.message)

    holder = threading.Thread(target=hold)
    holder.start()
    entered.wait(5)
    waiter = threading.Thread(target=call)
    waiter.start()
    time.sleep(0.1)
    t0 = time.monotonic()
    call()  # the third caller: refused at once
    assert time.monotonic() - t0 < 0.2 and "busy with a test" in outcomes[0]
    waiter.join()  # the waiting one gives up after wait_s
    assert "busy" in outcomes[1]
    release.set()
    holder.join()
    call()
    assert outcomes[-1] == "ran"


def test_one_training_run_at_a_time(tmp_path, monkeypatch):
    jobs = JobManager(tmp_path)
    spawned: list[str] = []
    monkeypatch.setattr(jobs, "_spawn", lambda spec, run_dir, resume: spawned.append(spec.name))
    monkeypatch.setattr(jobs, "running", lambda: spawned[0] if spawned else None)
    monkeypatch.setattr(jobs, "status", lambda name: name)
    jobs.start(TrainSpec(name="first", env="gridworld"))
    with pytest.raises(JobError, match=r"a training run is already going \(first\)"):
        jobs.start(TrainSpec(name="second", env="gridworld"))
    with pytest.raises(JobError, match="the environment must be"):
        jobs.start(TrainSpec(name="third", env="../../etc"))
    with pytest.raises(JobError, match="holds the exported GIFs"):
        jobs.run_dir(GALLERY)
    with pytest.raises(JobError) as e:
        jobs.run_dir("A" * 1_000_000)
    assert "1,000,000 characters" in str(e.value) and len(str(e.value)) < 300
    assert spawned == ["first"]


def test_training_leaves_a_core_for_play(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert train_threads() == 1
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert train_threads() == 15
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert train_threads() == 4


def test_signed_never_reads_minus_zero():
    assert signed(-0.001) == "+0.00" and signed(-0.0) == "+0.00" and signed(0.004) == "+0.00"
    assert signed(-0.25) == "-0.25" and signed(1.5) == "+1.50"


def test_a_held_key_streams_steps_until_its_release_which_may_come_first(tiny_run):
    """The lane plays its move step after step, one JSON line each (both frames as PNG data URLs and the stats
    line); a release of that hold ends it after the step in flight, and a release that reached the server before
    the stream started ends it before any step."""
    import base64
    import io
    import json

    from PIL import Image

    from app.engine import ModelBundle, PlaySession
    from app.webui.common import TabState
    from app.webui.lane import RELEASES, hold_lines

    st = TabState(str(tiny_run))
    st.session = PlaySession(ModelBundle.load(tiny_run, device="cpu"), shadow=True)
    st.session.reset(1)
    try:
        stream = hold_lines(st, 1, "hold-u1")
        lines = [json.loads(next(stream)) for _ in range(3)]
        RELEASES.add("hold-u1")
        assert [x["step"] for x in lines] == [1, 2, 3] and [json.loads(x) for x in stream] == [{"end": True}]
        png = base64.b64decode(lines[2]["dream"].removeprefix("data:image/png;base64,"))
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(png)).convert("RGB")), st.session.info.dream_frame)
        assert lines[2]["real"].startswith("data:image/png;base64,")
        assert "<strong>step</strong> 3 " in lines[2]["stats"] and "**" not in lines[2]["stats"]
        assert len(st.errors) == 3, "the dream-vs-real plot keeps every step of the hold"
        RELEASES.add("hold-u2")  # before hold 2 starts
        assert [json.loads(x) for x in hold_lines(st, 1, "hold-u2")] == [{"end": True}]
        assert st.session.info.step == 3
    finally:
        st.close()


def test_crafter_worlds_made_in_the_env_process_play_as_worlds_made_here():
    """The spares' env process resets Crafter with a seed; the env it hands over steps exactly as one reset here."""
    from app.webui.sessions import EnvMaker
    from model.data.envs import make_env

    maker = EnvMaker()
    try:
        env, obs, _ = maker.reset("crafter", 11)
        here = make_env("crafter")
        assert np.array_equal(obs, here.reset(seed=11)[0])
        for a in (1, 3, 5, 2, 4):
            assert np.array_equal(env.step(a)[0], here.step(a)[0])
        assert maker.reset("gridworld", 11) is None, "cheap envs are reset by the caller"
    finally:
        maker.close()


def test_the_train_tabs_tick_sends_only_what_changed_since_the_pages_last_tick(tmp_path):
    """A page that watches a run gets, each second, only the widgets whose value changed (its plots are not
    redrawn every second while another page plays); a page with no run selected gets nothing."""
    import pandas as pd

    from app.webui.train_tab import TrainTab

    class Widget:
        def __init__(self, i):
            self._id = i

    progress, plot, seen_state = Widget(1), Widget(2), Widget(3)
    values = {progress: "epoch 1", plot: pd.DataFrame({"epoch": [1], "value": [0.5]})}

    class FakeView:
        seen = seen_state

        def show(self, jobs, run, scrub, names=None):  # only the named widgets, as TrainView.show
            by_name = {"progress": progress, "plot": plot}
            return {w: v for w, v in values.items() if names is None or w in [by_name[n] for n in names]}

    tab = TrainTab.__new__(TrainTab)
    tab.v, tab.jobs, tab.scrub = FakeView(), None, None
    tab.run_name = lambda run: run
    first = tab.tick("run-a", None)
    assert set(first) == {progress, plot, seen_state}
    second = tab.tick("run-a", first[seen_state])
    assert set(second) == {seen_state}, "nothing changed: nothing but the page's own record is sent"
    values[plot] = pd.DataFrame({"epoch": [1, 2], "value": [0.5, 0.4]})
    third = tab.tick("run-a", second[seen_state])
    assert set(third) == {plot, seen_state} and len(third[plot]) == 2
    assert set(tab.tick(None, None)) == {seen_state}
    values[progress] = "epoch 2"
    assert set(tab.tick("run-a", third[seen_state], ("progress",))) == {progress, seen_state}, "this tick's widgets only"
