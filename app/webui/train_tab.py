"""The Train tab: start, stop and resume background training runs and watch their progress."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import gradio as gr
import pandas as pd

from app.webui.common import PRIVATE, UISettings, View, checkpoint_choices, shown_to_user
from app.webui.guard import Scrubber, refuse, text, whole
from app.webui.jobs import PROCESS_LOG, JobError, JobManager, TrainSpec, crash_line, format_eta, latest_checkpoint
from app.webui.play_tab import PlayTab

RUN_HEADERS = ["run", "state", "epoch", "frames", "frames/s", "ETA"]
LOSS_KEYS = ("tokenizer_loss", "world_model_loss", "actor_critic_loss")  # the trainer's headline loss names
SCORE_KEYS = ("crafter_score", "return_mean", "return")  # "return": runs written before episode_stats' keys


def long_rows(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> pd.DataFrame | None:
    """Metrics rows -> long format (epoch, value, series) for the numeric ``keys``."""
    out = []
    for i, r in enumerate(rows):
        x = r.get("epoch", i)
        for k, v in r.items():
            if k != "epoch" and k in keys and isinstance(v, (int, float)) and not isinstance(v, bool):
                out.append({"epoch": x, "value": float(v), "series": k})
    # None, not an empty frame: an empty frame's object columns make the plot's axes categorical for good.
    return pd.DataFrame(out, columns=["epoch", "value", "series"]) if out else None


def progress_md(jobs: JobManager, name: str | None, scrub: Scrubber) -> tuple[str, str, str | None]:
    """(progress line, log tail, what a crash said or None) of one run, without server paths or
    traceback frames (the whole traceback stays in the run folder's process.log)."""
    if not name:
        return "No run selected.", "", None
    try:
        s = jobs.status(name)
    except JobError as e:
        return str(e), "", None
    p = s.progress
    frames = "-" if p["frames"] is None else f"{int(p['frames']):,}"
    if p["total_frames"]:
        frames += f" / {int(p['total_frames']):,}"
    fps = "-" if p["fps"] is None else f"{p['fps']:.0f}"
    line = (f"**{s.name}**: **{s.state}** · epoch {p['epoch'] if p['epoch'] is not None else '-'} · frames {frames}"
            f" · {fps} frames/s · ETA {format_eta(p['eta_s'])}")
    if s.pid:
        line += f" · pid {s.pid}"
    crash = crash_line(s.error)
    error = None if crash is None else (f"The run stopped with an error: {scrub.paths(crash)}\n(the whole "
                                        f"traceback is in runs/{s.name}/{PROCESS_LOG})")
    return line, tidy_log(jobs.log_tail(name, 30), scrub), error


def tidy_log(log: str, scrub: Scrubber) -> str:
    """A log tail to show: a traceback's frames dropped (its last line, the error, stays), paths shortened."""
    out, in_traceback = [], False
    for line in log.splitlines():
        if line.startswith("Traceback (most recent call last)"):
            in_traceback = True
            continue
        if in_traceback and (line.startswith(" ") or not line.strip()):
            continue
        in_traceback = False
        out.append(scrub.paths(line))
    return "\n".join(out)


def training_line(jobs: JobManager) -> str:
    """The status line every tab shows while a run trains (empty when none does)."""
    name = jobs.running()
    if name is None:
        return ""
    p = jobs.status(name).progress
    epoch = f", epoch {p['epoch']}" if p["epoch"] is not None else ", starting"
    return f"⚙ A training run is going: **{name}**{epoch} (Train tab)."


def fresh_run_name() -> str:
    return f"run-{time.strftime('%Y%m%d-%H%M%S')}"


def run_names(jobs: JobManager) -> list[str]:
    return [r.name for r in jobs.list_runs()]


def runs_table(jobs: JobManager) -> pd.DataFrame:
    rows = []
    for r in jobs.list_runs():
        p = r.progress
        rows.append([r.name, r.state, p["epoch"], p["frames"],
                     None if p["fps"] is None else round(p["fps"], 1), format_eta(p["eta_s"])])
    return pd.DataFrame(rows, columns=RUN_HEADERS)


@dataclass
class TrainView(View):
    """The Train tab's widgets."""

    name: gr.Textbox
    env: gr.Dropdown
    preset: gr.Dropdown
    device: gr.Dropdown
    tokenizer: gr.Radio
    itok: gr.Checkbox
    baselines: gr.Checkbox
    frames: gr.Number
    epochs: gr.Number
    start_btn: gr.Button
    stop_btn: gr.Button
    resume_btn: gr.Button
    play_btn: gr.Button
    run_sel: gr.Dropdown
    refresh_btn: gr.Button
    progress: gr.Markdown
    error: gr.Textbox
    loss_plot: gr.LinePlot
    score_plot: gr.LinePlot
    log: gr.Textbox
    runs: gr.Dataframe
    timer: gr.Timer
    slow_timer: gr.Timer
    seen: gr.State  # what this page's last ticks sent, by widget (TrainTab.tick sends only what changed)

    RUN = ("progress", "error", "loss_plot", "score_plot", "log")  # what the tab shows of the selected run
    # What the 1 s tick refreshes, and what the slower one does: every output of an event gets the front-end's
    # loading-state updates, so the tables and plots are not outputs of the fast tick at all.
    FAST = ("progress", "error")
    SLOW = ("runs", "loss_plot", "score_plot", "log")
    FORM = ("name", "env", "preset", "device", "tokenizer", "itok", "baselines", "frames", "epochs")

    def show_run(self, jobs: JobManager, run: str | None, scrub: Scrubber,
                 names: tuple[str, ...] = RUN) -> dict[Any, Any]:
        """The selected run's progress line, crash error, loss and score plots, and log tail (``names``: only
        these, and only the files they need are read)."""
        out: dict[str, Any] = {}
        if {"progress", "error", "log"} & set(names):
            line, tail_text, err = progress_md(jobs, run, scrub)
            out.update(progress=line, error=gr.update(value=err or "", visible=bool(err)), log=tail_text)
        if {"loss_plot", "score_plot"} & set(names):
            rows = jobs.metrics(run) if run else []
            out.update(loss_plot=long_rows(rows, LOSS_KEYS), score_plot=long_rows(rows, SCORE_KEYS))
        return self.values(**{n: out[n] for n in names if n in out})

    def show(self, jobs: JobManager, run: str | None, scrub: Scrubber, choices: bool = False,
             names: tuple[str, ...] | None = None) -> dict[Any, Any]:
        """The runs table and the selected run (``names``: only these); with ``choices``, the run list is
        reread too."""
        names = names or ("runs", *self.RUN)
        out = self.values(runs=runs_table(jobs)) if "runs" in names else {}
        out.update(self.show_run(jobs, run, scrub, tuple(n for n in names if n != "runs")))
        if choices:
            out.update(self.values(run_sel=gr.update(choices=run_names(jobs), value=run)))
        return out


SLOW_EVERY_S = 5.0  # the runs table, plots and log tail of a watched run are refreshed this often


def fingerprint(value: Any) -> str:
    """What a widget's value looks like, to tell a changed one from the same one sent again."""
    return value.to_json() if isinstance(value, pd.DataFrame) else repr(value)


def gpu_choices() -> list[tuple[str, str]]:
    """Device choices for the Train form; a GPU is shown by name when present."""
    import torch

    out = [("auto", "auto"), ("cpu", "cpu")]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            out.append((f"cuda:{i} ({torch.cuda.get_device_name(i)})", f"cuda:{i}"))
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        out.append(("mps (Apple GPU)", "mps"))
    return out


def env_choices() -> list[str]:
    out = ["crafter", "gridworld"]
    try:
        import ale_py  # noqa: F401

        out += ["atari:Pong", "atari:Breakout"]
    except ImportError:
        pass
    return out


def _form_rows() -> dict[str, Any]:
    from model.config import PRESETS

    w: dict[str, Any] = {}
    with gr.Row():
        w["name"] = gr.Textbox(fresh_run_name(), label="Run name", elem_id="train-name")
        w["env"] = gr.Dropdown(env_choices(), value="crafter", label="Environment", elem_id="train-env",
                               allow_custom_value=True)
        w["preset"] = gr.Dropdown(list(PRESETS), value="cpu", label="Preset", elem_id="train-preset")
        w["device"] = gr.Dropdown(gpu_choices(), value="auto", label="Device", elem_id="train-device")
    with gr.Row():
        w["tokenizer"] = gr.Radio(["delta", "iris"], value="delta", label="Tokenizer", elem_id="train-tokenizer")
        w["itok"] = gr.Checkbox(True, label="I-tokens", elem_id="train-itok")
        w["baselines"] = gr.Checkbox(False, label="Also train baselines (no-I-token WM, IRIS tokenizer)",
                                     elem_id="train-baselines")
        w["frames"] = gr.Number(0, label="Frame budget (0 = preset's)", precision=0, elem_id="train-frames")
        w["epochs"] = gr.Number(0, label="Stop after epoch (0 = at the budget)", precision=0,
                                elem_id="train-epochs")
    with gr.Row():
        w["start_btn"] = gr.Button("Start", variant="primary", elem_id="btn-train-start")
        w["stop_btn"] = gr.Button("Stop", variant="stop", elem_id="btn-train-stop")
        w["resume_btn"] = gr.Button("Resume", elem_id="btn-train-resume")
        w["play_btn"] = gr.Button("Play this run", elem_id="btn-train-play")
    return w


def _layout(jobs: JobManager) -> TrainView:
    with gr.Tab("Train", id="train", elem_id="tab-train"):
        w = _form_rows()
        with gr.Row():
            w["run_sel"] = gr.Dropdown(run_names(jobs), value=None, label="Run",
                                       elem_id="train-run", allow_custom_value=True, scale=3)
            w["refresh_btn"] = gr.Button("Refresh", elem_id="btn-train-refresh", scale=1)
        w["progress"] = gr.Markdown("No run selected.", elem_id="train-progress")
        w["error"] = gr.Textbox(label="Error (crashed run)", lines=8, visible=False, elem_id="train-error",
                                interactive=False)
        with gr.Row():
            w["loss_plot"] = gr.LinePlot(None, x="epoch", y="value", color="series", title="Losses",
                                         height=260, elem_id="train-loss")
            w["score_plot"] = gr.LinePlot(None, x="epoch", y="value", color="series",
                                          title="Crafter score / return", height=260, elem_id="train-score")
        w["log"] = gr.Textbox(label="Log (tail)", lines=10, max_lines=10, interactive=False, elem_id="train-log",
                              autoscroll=True)
        w["runs"] = gr.Dataframe(runs_table(jobs), headers=RUN_HEADERS, label="Runs", interactive=False,
                                 elem_id="train-runs")
        w["timer"] = gr.Timer(1.0)
        w["slow_timer"] = gr.Timer(SLOW_EVERY_S)
        w["seen"] = gr.State(None)
    return TrainView(**w)


def checked_spec(run: Any, env_v: Any, preset_v: Any, dev: Any, tok: Any, itok_v: Any, base: Any, frames_v: Any,
                 epochs_v: Any) -> TrainSpec:
    """The Train form as a TrainSpec, each field checked (the name and env again by JobManager.start)."""
    return TrainSpec(name=text(run, "the run name", 64).strip(), env=text(env_v, "the environment", 64),
                     preset=text(preset_v, "the preset", 32), tokenizer=tok if tok in ("delta", "iris") else "delta",
                     i_tokens=itok_v is not False, device=text(dev, "the device", 32) or "auto",
                     frames=whole(frames_v or 0, "the frame budget", 0, 10**12) or None, baselines=base is True,
                     epochs=whole(epochs_v or 0, "the last epoch", 0, 10**6) or None)


class TrainTab:
    """The Train tab's events: a run name is checked before anything reads the runs folder with it."""

    def __init__(self, settings: UISettings, jobs: JobManager, view: TrainView, play: PlayTab, tabs: gr.Tabs):
        self.settings, self.jobs, self.v, self.play, self.tabs = settings, jobs, view, play, tabs
        self.scrub = settings.scrubber()

    def run_name(self, run: Any) -> str:
        """A selected run's name, or a plain refusal (nothing else reads the runs folder with it)."""
        name = text(run, "the run name", 1024)
        if not name:
            raise refuse("Select a run first.")
        with shown_to_user(JobError):
            self.jobs.run_dir(name)
        return name

    def start(self, *form: Any) -> dict[Any, Any]:
        spec = checked_spec(*form)
        with self.settings.gate("train")(), shown_to_user(JobError):
            self.jobs.start(spec)
        return {**self.v.show(self.jobs, spec.name, self.scrub, choices=True), **self.v.values(name=fresh_run_name())}

    def stop(self, run: Any) -> dict[Any, Any]:
        name = self.run_name(run)
        with shown_to_user(JobError):
            self.jobs.stop(name)
        return self.v.show(self.jobs, name, self.scrub)

    def resume(self, run: Any) -> dict[Any, Any]:
        name = self.run_name(run)
        with self.settings.gate("train")(), shown_to_user(JobError):
            self.jobs.resume(name)
        return self.v.show(self.jobs, name, self.scrub)

    def refresh(self, run: Any) -> dict[Any, Any]:
        name = self.run_name(run) if run else None
        return self.v.show(self.jobs, name, self.scrub, choices=True)

    def tick(self, run: Any, seen: dict[str, str] | None, names: tuple[str, ...] | None = None) -> dict[Any, Any]:
        """A timed refresh of the selected run (``names``: these widgets only): only the widgets whose value changed
        since this page's last tick (a name that is not a run shows nothing new). Why: a page that watches a run
        must not cost the server and the browser a redraw of every table and plot each second while another page
        plays."""
        try:
            out = self.v.show(self.jobs, self.run_name(run), self.scrub, names=names) if run else {}
        except gr.Error:
            out = {}
        seen, changed = dict(seen or {}), {}
        for widget, value in out.items():
            key, mark = str(widget._id), fingerprint(value)
            if seen.get(key) != mark:
                seen[key], changed[widget] = mark, value
        return {**changed, self.v.seen: seen}

    def play_run(self, st: Any, run: Any, *options: Any) -> dict[Any, Any]:
        name = self.run_name(run)
        if latest_checkpoint(self.settings.runs_dir / name) is None:
            raise refuse(f"run {name!r} has no checkpoint yet (one is written at the end of each epoch)")
        run_dir = str(self.settings.runs_dir / name)
        pv = self.play.view
        return {self.tabs: gr.update(selected="play"),
                **pv.values(checkpoint=gr.update(choices=checkpoint_choices(self.settings), value=run_dir)),
                **self.play.load(st, run_dir, *options)}

    def wire(self) -> None:
        v, pv = self.v, self.play.view
        shown = v.parts("runs", *v.RUN)
        v.start_btn.click(self.start, v.parts(*v.FORM), v.parts("run_sel", "runs", *v.RUN, "name"),
                          api_name="train_start", concurrency_limit=None)
        v.stop_btn.click(self.stop, [v.run_sel], shown, api_name="train_stop")
        v.resume_btn.click(self.resume, [v.run_sel], shown, api_name="train_resume", concurrency_limit=None)
        v.refresh_btn.click(self.refresh, [v.run_sel], [v.run_sel, *shown], api_name="train_refresh")
        v.run_sel.input(lambda run: v.show_run(self.jobs, self.run_name(run), self.scrub), [v.run_sel],
                        v.parts(*v.RUN), **PRIVATE)
        for timer, names in ((v.timer, v.FAST), (v.slow_timer, v.SLOW)):
            timer.tick(lambda run, seen, names=names: self.tick(run, seen, names), [v.run_sel, v.seen],
                       [*v.parts(*names), v.seen], **PRIVATE, show_progress="hidden")
        v.play_btn.click(self.play_run, [pv.state, v.run_sel, *pv.option_inputs()],
                         [self.tabs, pv.checkpoint, *pv.load_outputs()], api_name="train_play")


def train_tab(settings: UISettings, jobs: JobManager, play: PlayTab, tabs: gr.Tabs) -> TrainView:
    """Lay out the Train tab and wire its events; "Play this run" opens a run in ``play``."""
    v = _layout(jobs)
    TrainTab(settings, jobs, v, play, tabs).wire()
    return v
