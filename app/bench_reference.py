"""`deltaplay bench side-by-side`: the published Δ-IRIS code and ours on the same workloads, alternating.

On a shared machine an absolute time says little; a ratio measured in one sitting holds. So every
workload runs as fresh child processes in the order reference, ours, reference, ours, ... for
``--rounds`` rounds, and the figure per side is the median over its rounds; the ratio is
reference time / our time (above 1: ours is faster), for wall and for CPU time.

* Ours: ``python -m app bench <workload> --json FILE`` (app/bench.py's own workload functions).
* Reference: ``python -m app.bench_published`` imports the published code (GPL-3.0) from an extracted
  copy outside this repository at run time; nothing of it lives here.

Both sides: CPU, the same thread count (1 by default), random weights and inputs, and the same counts of
untimed (``--warmup``) and timed (``--repeats``) runs inside each child. Float32 by default; with
``--dtype bf16`` each side uses mixed precision as its own code does: the published trainer's bf16 autocast
for the tokenizer and world model steps (its dream and actor-critic stay float32), and ours ``--dtype bf16``
(training under autocast, the dream's conv nets in bf16). The published code
always runs its own Crafter configuration; ours runs ``--preset`` (``paper`` is the same model).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from app.bench_published import missing_packages, missing_parts
from app.cli import UserError

NAME = "side-by-side"
COMPARABLE = ("dream", "imagine", "world_model", "tokenizer", "actor_critic")
DEFAULT_COMPARE = ("dream", "imagine", "world_model", "tokenizer")
ENV_VAR = "DELTA_IRIS_REFERENCE"  # default for --reference
PUBLISHED_URL = "https://github.com/vmicheli/delta-iris"
REPO_ROOT = Path(__file__).resolve().parents[1]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The side-by-side's own flags; --preset, --threads, --steps, --horizon, --repeats, --warmup, --path
    and --json keep their `deltaplay bench` meaning (repeats and warm-up: inside each child)."""
    g = p.add_argument_group(f"{NAME} (deltaplay bench {NAME} --reference DIR)",
                             "--threads defaults to 1 here; --repeats and --warmup count the runs inside each child")
    g.add_argument("--reference", default=os.environ.get(ENV_VAR),
                   help=f"extracted copy of the published code ({PUBLISHED_URL}); default ${ENV_VAR}")
    g.add_argument("--compare", nargs="+", default=list(DEFAULT_COMPARE), choices=COMPARABLE,
                   help="workloads to compare (default: " + " ".join(DEFAULT_COMPARE) + ")")
    g.add_argument("--rounds", type=int, default=3, help="alternating reference/ours child pairs per workload")
    g.add_argument("--imagine-batch", type=int, nargs="+", default=[32])
    g.add_argument("--train-batch", type=int, nargs="+", default=[4], help="sequences per training step")


def check_reference(path: str | os.PathLike | None) -> Path:
    """The reference folder, or a UserError that says in plain words what is wrong and how to get it."""
    how = (f"extract the published code outside this repository (git clone {PUBLISHED_URL}) "
           f"and pass its folder with --reference DIR or ${ENV_VAR}")
    if not path:
        raise UserError(f"{NAME} needs the published Δ-IRIS code: {how}")
    ref = Path(path).expanduser().resolve()
    if not ref.is_dir():
        raise UserError(f"reference folder {ref} does not exist: {how}")
    if ref == REPO_ROOT or REPO_ROOT in ref.parents:
        raise UserError(f"reference folder {ref} is inside this repository: {how} (it is GPL-3.0 code, imported at "
                        "run time, never part of this repository)")
    missing = missing_parts(ref)
    if missing:
        what = "src/ folder" if not (ref / "src").is_dir() else ", ".join(missing)
        raise UserError(f"{ref} is not the published Δ-IRIS code ({PUBLISHED_URL}): it has no {what}; {how}")
    if missing_packages():
        raise UserError(f"the published code needs {', '.join(missing_packages())}: "
                        f"pip install {' '.join(missing_packages())}")
    return ref


# ------------------------------------------------------------------------------------------ workloads

@dataclass(frozen=True)
class Case:
    """One workload at one batch size, as both sides run it."""

    kind: str  # dream | imagine | world_model | tokenizer | actor_critic
    batch: int
    label: str
    unit: str  # what one "ms per" figure is per: step | frame | pair


def cases(compare: Sequence[str], imagine_batch: Sequence[int], train_batch: Sequence[int], horizon: int,
          seq: int = 21) -> list[Case]:
    """The workloads to run, in the order given."""
    out = []
    for kind in compare:
        if kind == "dream":
            out.append(Case("dream", 1, "dream step, batch 1", "step"))
        elif kind == "imagine":
            out += [Case("imagine", b, f"imagine batch {b} horizon {horizon}", "frame") for b in imagine_batch]
        elif kind == "tokenizer":
            out += [Case(kind, b, f"tokenizer train step {b}x{seq}", "pair") for b in train_batch]
        elif kind == "world_model":
            out += [Case(kind, b, f"world-model train step {b}x{seq}", "frame") for b in train_batch]
        elif kind == "actor_critic":
            out += [Case(kind, b, f"actor-critic train step batch {b}", "step") for b in train_batch]
        else:
            raise UserError(f"{NAME} cannot compare {kind!r}; choose from {', '.join(COMPARABLE)}")
    return out


class Side(Protocol):
    """How one side runs a case in a child process and reads the figures back."""

    name: str

    def argv(self, case: Case, out: Path) -> list[str]: ...

    def read(self, case: Case, out: Path) -> dict[str, float]:
        """``wall_ms`` and ``cpu_ms`` per ``case.unit`` (median of the child's timed runs), maybe more."""
        ...


@dataclass
class Timing:
    """Counts every child uses, so both sides do the same work per figure."""

    threads: int = 1
    steps: int = 50
    horizon: int = 15
    repeats: int = 1
    warmup: int = 1


@dataclass
class Ours:
    """Our side: ``deltaplay bench <workload>`` (its workload functions as they are) in a child."""

    timing: Timing
    preset: str = "paper"
    path: str = "fast"
    dtype: str = "float32"
    name: str = "ours"

    def argv(self, case: Case, out: Path) -> list[str]:
        t = self.timing
        common = ["--preset", self.preset, "--device", "cpu", "--dtype", self.dtype, "--path", self.path,
                  "--threads", str(t.threads), "--repeats", str(t.repeats), "--warmup", str(t.warmup),
                  "--json", str(out)]
        if case.kind == "dream":
            return [sys.executable, "-m", "app", "bench", "dream", "--steps", str(t.steps), *common]
        if case.kind == "imagine":
            return [sys.executable, "-m", "app", "bench", "imagine", "--batch", str(case.batch),
                    "--horizon", str(t.horizon), *common]
        return [sys.executable, "-m", "app", "bench", "train", "--train-parts", case.kind,
                "--batch", str(case.batch), *common]

    def read(self, case: Case, out: Path) -> dict[str, float]:
        row = json.loads(out.read_text())["results"][0]
        if case.kind == "imagine":
            frames = case.batch * self.timing.horizon
            wall = 1000 * row["s_per_rollout"] / frames  # unrounded, unlike frames_per_s
            return {"wall_ms": wall, "cpu_ms": row["cpu_ms_per_frame"], "frames_per_s": 1000 / wall}
        return {"wall_ms": row[f"ms_per_{case.unit}"], "cpu_ms": row[f"cpu_ms_per_{case.unit}"]}


@dataclass
class Reference:
    """The published code's side: app/bench_published.py in a child, importing ``reference``."""

    timing: Timing
    reference: Path
    mixed_precision: bool = False
    name: str = "reference"

    def argv(self, case: Case, out: Path) -> list[str]:
        t = self.timing
        return [sys.executable, "-m", "app.bench_published", "--reference", str(self.reference),
                "--workload", case.kind, "--batch", str(case.batch), "--steps", str(t.steps),
                "--horizon", str(t.horizon), "--repeats", str(t.repeats), "--warmup", str(t.warmup),
                "--threads", str(t.threads), "--json", str(out)] + (["--mixed-precision"] if self.mixed_precision else [])

    def read(self, case: Case, out: Path) -> dict[str, float]:
        r = json.loads(out.read_text())
        fig = {"wall_ms": r["wall_ms"], "cpu_ms": r["cpu_ms"]}
        if "frames_per_s" in r:
            fig["frames_per_s"] = r["frames_per_s"]
        if "tokens_given" in r:
            fig["tokens_given_wall_ms"] = r["tokens_given"]["wall_ms"]
            fig["tokens_given_cpu_ms"] = r["tokens_given"]["cpu_ms"]
        return fig


# ----------------------------------------------------------------------------------------- running

@dataclass
class Run:
    """One child process: which case, side and round, when, and what it measured (or why it failed)."""

    case: str
    side: str
    round: int
    order: int  # position in the whole sequence of children
    started: str
    child_s: float
    figures: dict[str, float] = field(default_factory=dict)
    error: str | None = None


def child_env(threads: int) -> dict[str, str]:
    """The parent's environment with the thread count pinned for OpenMP/MKL too."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def run_child(side: Side, case: Case, out: Path, threads: int) -> tuple[dict[str, float], str | None]:
    """Run one child; its figures, or an error with the tail of what it printed."""
    proc = subprocess.run(side.argv(case, out), cwd=REPO_ROOT, env=child_env(threads), capture_output=True, text=True)
    if proc.returncode != 0:
        why = "killed (out of memory?)" if proc.returncode == -9 else f"exit code {proc.returncode}"
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        return {}, f"{why}: " + " | ".join(tail)
    return side.read(case, out), None


def alternate(todo: Sequence[Case], sides: Sequence[Side], rounds: int, workdir: Path, threads: int = 1,
              log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True)) -> list[Run]:
    """Every case, ``rounds`` times the sides in the given order (reference first), each a fresh child."""
    runs: list[Run] = []
    for case in todo:
        for r in range(rounds):
            for side in sides:
                out = workdir / f"{len(runs):03d}-{case.kind}-b{case.batch}-{side.name}.json"
                started = time.strftime("%Y-%m-%dT%H:%M:%S")
                t0 = time.perf_counter()
                figures, error = run_child(side, case, out, threads)
                run = Run(case.label, side.name, r + 1, len(runs), started, round(time.perf_counter() - t0, 1),
                          figures, error)
                runs.append(run)
                what = (f"{figures['wall_ms']:.2f} ms/{case.unit} wall, {figures['cpu_ms']:.2f} CPU"
                        if error is None else f"FAILED {error}")
                log(f"[{started[11:]}] {case.label}: round {r + 1}/{rounds} {side.name:<9} {what} "
                    f"(child {run.child_s:.0f} s)")
    return runs


def summarize(todo: Sequence[Case], runs: Sequence[Run], reference: str = "reference",
              ours: str = "ours") -> list[dict[str, Any]]:
    """Per case: each side's median over its successful rounds and the ratios reference / ours."""
    rows = []
    for case in todo:
        def figs(side: str, key: str) -> list[float]:
            return [r.figures[key] for r in runs if r.case == case.label and r.side == side and r.error is None
                    and key in r.figures]

        ref_wall, our_wall = figs(reference, "wall_ms"), figs(ours, "wall_ms")
        row: dict[str, Any] = {"workload": case.label, "kind": case.kind, "batch": case.batch, "unit": case.unit,
                               "reference_runs": len(ref_wall), "ours_runs": len(our_wall)}
        if not ref_wall or not our_wall:
            rows.append(row | {"error": "no successful run on " + (reference if not ref_wall else ours)})
            continue
        for key in ("wall_ms", "cpu_ms"):
            ref, our = statistics.median(figs(reference, key)), statistics.median(figs(ours, key))
            row |= {f"reference_{key}": ref, f"ours_{key}": our, f"ratio_{key.split('_')[0]}": ref / our}
        if case.kind == "imagine":
            row |= {"reference_frames_per_s": 1000 / row["reference_wall_ms"],
                    "ours_frames_per_s": 1000 / row["ours_wall_ms"]}
        given = figs(reference, "tokens_given_wall_ms")
        if given:
            ref = statistics.median(given)
            row |= {"reference_tokens_given_wall_ms": ref, "ratio_tokens_given_wall": ref / row["ours_wall_ms"]}
        rows.append(row)
    return rows


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The summary as a table: medians in ms per unit (and frames/s for imagination), ratios ref / ours."""
    lines = [f"{'workload':<36} {'unit':<8} {'reference':>10} {'ours':>10} {'ratio':>7} {'CPU ratio':>9}  rounds"]
    for r in rows:
        unit = f"ms/{r['unit']}"
        if "error" in r:
            lines.append(f"{r['workload']:<36} {unit:<8} {'-':>10} {'-':>10} {'-':>7} {'-':>9}  {r['error']}")
            continue
        lines.append(f"{r['workload']:<36} {unit:<8} {r['reference_wall_ms']:>10.2f} {r['ours_wall_ms']:>10.2f} "
                     f"{r['ratio_wall']:>6.2f}x {r['ratio_cpu']:>8.2f}x  {r['reference_runs']}+{r['ours_runs']}")
        if "reference_frames_per_s" in r:
            lines.append(f"{'':<36} {'frames/s':<8} {r['reference_frames_per_s']:>10.2f} "
                         f"{r['ours_frames_per_s']:>10.2f}")
        if "reference_tokens_given_wall_ms" in r:
            lines.append(f"{'  same, reference without encoding':<36} {unit:<8} "
                         f"{r['reference_tokens_given_wall_ms']:>10.2f} {r['ours_wall_ms']:>10.2f} "
                         f"{r['ratio_tokens_given_wall']:>6.2f}x")
    return "\n".join(lines)


def cpu_model() -> str:
    """The CPU's model name (what lscpu prints), or the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run(args: argparse.Namespace) -> int:
    """`deltaplay bench side-by-side`: check the reference, alternate the children, print and write JSON."""
    if [w for w in args.workloads if w != NAME]:
        raise UserError(f"{NAME} runs alone: choose its workloads with --compare, not {' '.join(args.workloads)}")
    if args.checkpoint or args.device not in ("auto", "cpu") or args.compile:
        raise UserError(f"{NAME} compares both sides on the CPU with random weights: "
                        "drop --checkpoint, --device and --compile")
    if args.rounds < 1 or args.repeats < 1:
        raise UserError("--rounds and --repeats must be at least 1")
    reference = check_reference(args.reference)
    timing = Timing(threads=args.threads or 1, steps=args.steps, horizon=args.horizon, repeats=args.repeats,
                    warmup=args.warmup)
    todo = cases(args.compare, args.imagine_batch, args.train_batch, args.horizon)
    # --dtype bf16: each side's mixed precision as its own code uses it. The published trainer runs the tokenizer
    # and world model under bf16 autocast (its dream and actor-critic in float32); ours `--dtype bf16`.
    bf16 = args.dtype == "bf16"
    sides: list[Side] = [Reference(timing, reference, mixed_precision=bf16),
                         Ours(timing, preset=args.preset, path=args.path, dtype=args.dtype)]
    if args.preset != "paper":
        print(f"note: ours runs the {args.preset!r} preset, the published code its own (paper) configuration: "
              "the ratios are not like for like", file=sys.stderr)
    if args.rounds < 3:
        print(f"note: {args.rounds} round(s); three or more make the medians robust to a noisy neighbour",
              file=sys.stderr)
    load_before, started = os.getloadavg(), time.strftime("%Y-%m-%dT%H:%M:%S")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="deltaplay-sbs-") as tmp:
        runs = alternate(todo, sides, args.rounds, Path(tmp), timing.threads)
    rows = summarize(todo, runs)
    import torch

    meta = {"command": "deltaplay bench " + " ".join(sys.argv[2:] if sys.argv[1:2] == ["bench"] else sys.argv[1:]),
            "reference": str(reference), "preset": args.preset, "path": args.path, "dtype": args.dtype, "device": "cpu",
            "threads": timing.threads, "timing": asdict(timing), "rounds": args.rounds, "torch": torch.__version__,
            "python": platform.python_version(), "cpu": cpu_model(), "cpu_count": os.cpu_count(),
            "load_avg_1min": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
            "started": started, "wall_min": round((time.perf_counter() - t0) / 60, 1),
            "ratio": "reference time / our time (above 1: ours is faster)"}
    print(f"\n{NAME}: published Δ-IRIS ({reference}) vs ours ({args.preset}, {args.path} path), CPU {args.dtype}, "
          f"{timing.threads} thread(s), {args.rounds} alternating rounds; medians; ratio = reference / ours")
    print(format_table(rows))
    from model.train.run_dir import write_json

    out = write_json(args.json or Path("runs/bench") / time.strftime("side-by-side-%Y%m%d-%H%M%S.json"),
                     {"meta": meta, "results": rows, "runs": [asdict(r) for r in runs]})
    print(f"\nwrote {out}  (load average {meta['load_avg_1min']})")
    return 0 if all("error" not in r for r in rows) else 1
