"""`fada curate --engine ray`: a local Ray instance started inside the test (2 CPUs) curates the labelled synthetic
corpus to the same outputs as the local engine; a task whose worker dies or that raises is retried once, then
listed as skipped; a killed run resumes; a missing Ray is one line naming the extra."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fada.config import load_recipe
from fada.curation import engines, pipeline
from fada.data.media import write_video
from fada.errors import FadaError
from fada.stages import curate

ray = pytest.importorskip("ray", reason="the [ray] extra (in [dev])")
SETS = ("manifest.jsonl", "A.jsonl", "B.jsonl")


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from fada.data.synthetic import generate_corpus

    root = tmp_path_factory.mktemp("ray_corpus")
    generate_corpus(root, count=8, size=96, seed=5, defect_fraction=0.5, seconds=(2.3, 2.6), workers=2,
                    progress=False)
    videos = root / "videos"
    (videos / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 20)
    write_video(videos / "silent.mp4", np.zeros((50, 32, 32, 3), np.uint8), 25, threads=1)
    return videos


@pytest.fixture(scope="module")
def local_run(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    summary = curate.run(corpus, out, load_recipe("tiny-curate", stage="curate"), workers=2, progress=False)
    return out, summary


def rows(folder: Path, name: str) -> list[dict]:
    return sorted((json.loads(x) for x in (folder / name).read_text().splitlines()),
                  key=lambda r: (r.get("id") or "", r["source_video"]))


def same_outputs(a: Path, b: Path):
    for name in SETS:
        assert rows(a, name) == rows(b, name), name
    ra, rb = (json.loads((f / "report.json").read_text()) for f in (a, b))
    assert ra == rb
    for r in rows(a, "B.jsonl"):  # the clips themselves, byte for byte
        assert (a / r["video"]).read_bytes() == (b / r["video"]).read_bytes()
        assert (a / r["wav"]).read_bytes() == (b / r["wav"]).read_bytes()


def test_ray_engine_gives_the_local_engines_outputs(cluster, corpus, local_run, tmp_path):
    out = tmp_path / "ray"
    summary = curate.run(corpus, out, load_recipe("tiny-curate", stage="curate"), progress=False, engine="ray",
                         address=cluster)
    local_out, local_summary = local_run
    assert summary["processed"] == local_summary["processed"] == 10 and summary["B"] > 0
    same_outputs(local_out, out)
    skipped = {r["source_video"]: r["skipped"] for r in rows(out, "manifest.jsonl") if "skipped" in r}
    assert skipped == {"corrupt.mp4": "unreadable", "silent.mp4": "no_audio"}  # listed, not fatal


def _jobs(corpus: Path, out: Path) -> list[dict]:
    cfg = load_recipe("tiny-curate", stage="curate").curate
    params = pipeline.process_params(cfg)
    (out / ".cache").mkdir(parents=True, exist_ok=True)
    return [{"path": str(v.resolve()), "rel": v.name, "out": str(out.resolve()), "params": params,
             "cache": str(out / ".cache" / f"{v.stem}.json")} for v in pipeline.find_videos(corpus)]


def test_a_dying_or_raising_task_is_retried_once_then_listed(cluster, corpus, tmp_path):
    attempts = tmp_path / "attempts"
    attempts.mkdir()
    jobs = _jobs(corpus, tmp_path / "out")

    def flaky(job):  # a closure: Ray ships it by value to the workers (shared filesystem for the counters)
        with open(attempts / job["rel"], "a") as f:
            f.write("x")
        if job["rel"] == "clip_0001.mp4":
            os._exit(3)  # the worker process dies (a segfaulting decoder would look the same)
        if job["rel"] == "clip_0002.mp4":
            raise RuntimeError("boom inside the task")
        return pipeline.process_video(job)

    results = {r["source"]: r for r in engines.run_ray(jobs, cluster, False, 0, len(jobs), fn=flaky)}
    assert set(results) == {j["rel"] for j in jobs}
    for rel, why in (("clip_0001.mp4", ""), ("clip_0002.mp4", "boom inside the task")):
        assert (attempts / rel).read_text() == "xx"  # first try and one retry
        assert results[rel]["status"] == "skipped" and results[rel]["skipped"] == "task_failed"
        assert "failed 2 times on Ray" in results[rel]["detail"] and why in results[rel]["detail"], results[rel]
    assert (attempts / "clip_0000.mp4").read_text() == "x" and results["clip_0000.mp4"]["status"] != "skipped"
    assert not (tmp_path / "out" / ".cache" / "clip_0001.json").exists()  # a failed task is tried again next run


def test_a_killed_ray_run_resumes(cluster, corpus, local_run, tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "fada_cli.main", "curate", str(corpus), "--out", str(out), "--recipe",
           "tiny-curate", "--engine", "ray", "--address", cluster]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and len(list((out / ".cache").glob("*.json"))) < 2:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = len(list((out / ".cache").glob("*.json")))
    assert 2 <= finished and not (out / "manifest.jsonl").exists()
    summary = curate.run(corpus, out, load_recipe("tiny-curate", stage="curate"), progress=False, engine="ray",
                         address=cluster)
    # every video finished before the kill is reused (tasks still running then may have finished too)
    assert summary["reused"] >= finished and summary["reused"] + summary["processed"] == 10
    same_outputs(local_run[0], out)


def test_engine_arguments(tmp_path, corpus, monkeypatch):
    recipe = load_recipe("tiny-curate", stage="curate")
    with pytest.raises(FadaError, match="--engine 'spark'"):
        curate.run(corpus, tmp_path / "o", recipe, engine="spark")
    with pytest.raises(FadaError, match="--address is for --engine ray"):
        curate.run(corpus, tmp_path / "o", recipe, address="auto")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    with pytest.raises(FadaError, match=r'pip install -e "\.\[ray\]"'):
        curate.run(corpus, tmp_path / "o", recipe, engine="ray")
