"""Experience store: round trip, index rebuild, damaged files, a writer killed mid-collection."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import gridworld_episode
from model.data.store import CorruptEpisodeError, Episode, EpisodeStore

from helpers import REPO


def test_round_trip_and_counts(tmp_path):
    store = EpisodeStore(tmp_path / "s")
    eps = [gridworld_episode(s) for s in range(3)]
    names = ("collect_wood", "place_table")
    ach = np.zeros((eps[0].length, 2), np.uint8)
    ach[-1, 0] = 2
    eps[0] = Episode(eps[0].frames, eps[0].actions, eps[0].rewards, eps[0].terminated, eps[0].truncated,
                     achievements=ach, achievement_names=names, seed=0, env="crafter", meta={"policy": "random"})
    ids = [store.add(eps[0]), store.add(eps[1]), store.add(eps[2], split="test")]
    assert ids == [0, 1, 2]
    assert (tmp_path / "s/episodes/train/000000.npz").exists()
    assert (tmp_path / "s/episodes/test/000002.npz").exists()
    assert len(store) == 3 and store.ids("train") == [0, 1] and store.ids("test") == [2]
    assert store.num_steps == sum(e.length for e in eps)
    assert store.num_frames == store.num_steps + 3

    reopened = EpisodeStore(tmp_path / "s")
    got = reopened.get(0)
    for name in ("frames", "actions", "rewards", "terminated", "truncated", "achievements"):
        np.testing.assert_array_equal(getattr(got, name), getattr(eps[0], name))
    assert got.achievement_names == names and got.unlocked() == {"collect_wood": True, "place_table": False}
    assert got.seed == 0 and got.env == "crafter" and got.meta == {"policy": "random"}
    assert got.frames.dtype == np.uint8 and not got.frames.flags.writeable
    assert reopened.get(1).achievements.shape == (eps[1].length, 0)
    assert [e.seed for e in reopened.episodes("train")] == [0, 1]
    assert reopened.info(2)["return"] == pytest.approx(eps[2].return_)


def test_lru_cache(tmp_path):
    store = EpisodeStore(tmp_path, cache_size=2)
    for s in range(3):
        store.add(gridworld_episode(s))
    a = store.get(0)
    assert store.get(0) is a  # cached
    store.get(1), store.get(2)  # evicts 0
    assert store.get(0) is not a


def test_index_rebuilt_when_missing_or_stale(tmp_path):
    store = EpisodeStore(tmp_path)
    for s in range(3):
        store.add(gridworld_episode(s))
    (tmp_path / "index.json").unlink()
    assert EpisodeStore(tmp_path).ids() == [0, 1, 2]
    assert set(json.loads((tmp_path / "index.json").read_text())["episodes"]) == {"0", "1", "2"}
    # stale: an index that forgot an episode and lies about another's length
    data = json.loads((tmp_path / "index.json").read_text())
    del data["episodes"]["2"]
    data["episodes"]["1"]["size"] += 1
    data["episodes"]["1"]["length"] = 999
    (tmp_path / "index.json").write_text(json.dumps(data))
    fresh = EpisodeStore(tmp_path)
    assert fresh.ids() == [0, 1, 2] and fresh.info(1)["length"] == store.get(1).length
    (tmp_path / "index.json").write_text("{not json")
    assert EpisodeStore(tmp_path).ids() == [0, 1, 2]
    assert store.add(gridworld_episode(9)) == 3  # ids keep increasing


def test_damaged_files_are_reported_and_skipped(tmp_path):
    store = EpisodeStore(tmp_path)
    for s in range(3):
        store.add(gridworld_episode(s))
    # 1) torn file: truncated to half its size
    torn = tmp_path / "episodes/train/000001.npz"
    torn.write_bytes(torn.read_bytes()[: torn.stat().st_size // 2])
    with pytest.warns(RuntimeWarning, match="000001.npz"):
        s2 = EpisodeStore(tmp_path)
    assert s2.corrupt == [os.path.join("episodes", "train", "000001.npz")]
    assert s2.ids() == [0, 2] and [e.seed for e in s2.episodes()] == [0, 2]
    with pytest.raises(KeyError):
        s2.get(1)
    # 2) same size and mtime, flipped bytes: the index vouches for it, the load catches it
    bad = tmp_path / "episodes/train/000002.npz"
    st = bad.stat()
    raw = bytearray(bad.read_bytes())
    mid = len(raw) // 2
    raw[mid:mid + 64] = bytes(255 - b for b in raw[mid:mid + 64])
    bad.write_bytes(bytes(raw))
    os.utime(bad, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.warns(RuntimeWarning, match="000001.npz"):  # still on disk: reported on every open
        s3 = EpisodeStore(tmp_path)
    assert 2 in s3.ids()
    with pytest.warns(RuntimeWarning, match="000002.npz"), pytest.raises(CorruptEpisodeError):
        s3.get(2)
    assert 2 not in s3.ids() and any(c.endswith("000002.npz") for c in s3.corrupt)
    # a new episode never overwrites a damaged file's id
    assert s3.add(gridworld_episode(5)) == 3


WRITER = textwrap.dedent("""
    import sys
    sys.path[:0] = [{repo!r}, {tests!r}]
    from helpers import gridworld_episode
    from model.data.store import EpisodeStore
    store = EpisodeStore({root!r})
    seed = 0
    while True:
        ep_id = store.add(gridworld_episode(seed, max_steps=200))
        print(ep_id, seed, flush=True)
        seed += 1
""")


@pytest.mark.slow
def test_writer_killed_mid_collection(tmp_path):
    root = tmp_path / "store"
    code = WRITER.format(repo=str(REPO), tests=str(REPO / "tests"), root=str(root))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    finished = {}
    try:
        while len(finished) < 8:
            line = proc.stdout.readline()
            assert line, "writer died early"
            ep_id, seed = map(int, line.split())
            finished[ep_id] = seed
        # kill it while it writes the next file: wait until its temp file shows up
        split_dir, deadline = root / "episodes" / "train", time.monotonic() + 30
        while not list(split_dir.glob(".*.tmp*")) and time.monotonic() < deadline:
            time.sleep(0.0005)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    left_behind = list(split_dir.glob(".*.tmp*"))  # usually the half-written file
    store = EpisodeStore(root)
    assert store.corrupt == []
    assert set(finished) <= set(store.ids("train"))
    for ep_id, seed in finished.items():
        ep = store.get(ep_id)
        ref = gridworld_episode(seed, max_steps=200)
        np.testing.assert_array_equal(ep.frames, ref.frames)
        np.testing.assert_array_equal(ep.actions, ref.actions)
    # the index matches the files on disk, and no temp file of the dead writer is left behind
    on_disk = {int(p.stem) for p in (root / "episodes/train").glob("*.npz")}
    assert {int(k) for k in json.loads((root / "index.json").read_text())["episodes"]} == on_disk
    assert not list(split_dir.glob(".*")), f"temp files not cleaned: {left_behind}"
    assert EpisodeStore(root).ids() == sorted(on_disk)
