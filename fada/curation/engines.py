"""Where `fada curate`'s per-video work runs: local processes (``local``) or Ray tasks on a cluster (``ray``).

Both engines take the same job dicts (``fada.stages.curate``: absolute paths of the source video, the output folder
and the video's cache file) and return ``pipeline.process_video``'s result dicts, so their outputs are the same.
Each job writes its own cache file when it finishes, which is what makes a killed run resumable with either engine.

Ray: every video is one task (one CPU) on the cluster at ``address`` (``auto``, ``HOST:PORT`` or ``ray://...``),
or on a local Ray instance started for the run when no address is given. All nodes must see the input and output
folders at the same paths (a shared filesystem). A task whose worker dies, or that raises past
``process_video``'s own handling, is retried once; if it fails again the video is listed as skipped with the
reason, and the run goes on.
"""

from __future__ import annotations

from typing import Callable, Optional

from fada.curation import pipeline
from fada.errors import FadaError

ENGINES = ("local", "ray")
RAY_RETRIES = 1


def run_local(jobs: list[dict], workers: int, progress: bool, done: int, total: int,
              fn: Optional[Callable[[dict], dict]] = None) -> list[dict]:
    """Jobs in this process (workers 1) or a forkserver process pool; ``fn`` defaults to process_video."""
    from tqdm import tqdm

    fn = fn or pipeline.process_video
    results: list[dict] = []
    with tqdm(total=total, initial=done, desc="curate", unit="video", disable=not progress) as bar:
        if not jobs:
            return results
        if workers <= 1 or len(jobs) == 1:
            for job in jobs:
                results.append(fn(job))
                bar.update(1)
            return results
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
        with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=mp.get_context(method)) as pool:
            for res in pool.map(fn, jobs, chunksize=1):
                results.append(res)
                bar.update(1)
    return results


def import_ray():
    try:
        import ray
    except ImportError:
        raise FadaError('--engine ray needs Ray, an optional extra: pip install -e ".[ray]"') from None
    return ray


def run_ray(jobs: list[dict], address: Optional[str], progress: bool, done: int, total: int,
            num_cpus: Optional[int] = None, fn: Optional[Callable[[dict], dict]] = None) -> list[dict]:
    """Jobs as Ray tasks; results in completion order (the stage orders them by video). ``fn`` defaults to
    process_video (a test passes one that fails for a chosen video)."""
    from tqdm import tqdm

    fn = fn or pipeline.process_video
    ray = import_ray()
    started = False
    if not ray.is_initialized():
        kwargs = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
        if address:
            kwargs["address"] = address
        elif num_cpus:
            kwargs["num_cpus"] = int(num_cpus)
        try:
            ray.init(**kwargs)
        except (ConnectionError, RuntimeError, ValueError) as e:
            where = f"the Ray cluster at {address}" if address else "a local Ray instance"
            raise FadaError(f"cannot start or reach {where}: {_first_line(e)}") from None
        started = True
    try:
        task = ray.remote(num_cpus=1, max_retries=RAY_RETRIES, retry_exceptions=True)(fn)
        refs = {task.remote(job): job for job in jobs}
        results: list[dict] = []
        with tqdm(total=total, initial=done, desc="curate (ray)", unit="video", disable=not progress) as bar:
            pending = list(refs)
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                for ref in ready:
                    job = refs[ref]
                    try:
                        res = ray.get(ref)
                    except Exception as e:  # the task failed twice: its worker died, or it raised
                        cause = getattr(e, "cause", None) or e  # a RayTaskError wraps the task's own exception
                        res = pipeline._skipped(job, "task_failed",
                                                f"{job['path']}: failed {RAY_RETRIES + 1} times on Ray "
                                                f"({type(cause).__name__}: {_first_line(cause)})")
                    results.append(res)
                    bar.update(1)
        return results
    finally:
        if started:
            ray.shutdown()


def _first_line(e: BaseException) -> str:
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip()  # Ray colours its messages
    return (text.splitlines()[0] if text else type(e).__name__)[:300]
