"""Files per second of `emotion-av predict --workers 2` and of the Ray batch with 1 and 2
actors on the same 200+ real files, Ray's overhead at equal parallelism, and the peak RSS
of each actor. docs/batch.md holds the table.

The files: the six CREMA-D clips (video + voice), repeated under new names (hard links) to
half the set, and distinct RAVDESS recordings (voice) for the other half. The CLI runs first,
in a fresh process (its wall time includes the bundle load); then this process starts a local
Ray cluster (2 CPUs, its start timed apart) and calls `run_batch` (each run's wall time
includes the actors' start and bundle loads), as on a cluster that is already up: 1 and 2
actors decoding in a decoder worker each (the default, as the service), then 2 actors with
--in-process-decode (as the CLI decodes). The peak
RSS of an actor is its VmHWM, sampled every 0.2 s from /proc while the run lasts (the actors
are this process's descendants, titled MapWorker(MapBatches(Scorer)) by Ray). On a shared
machine the wall times follow the other loads' share of the CPUs, so the CPU seconds are
counted too: the CLI process's (wait4), and for Ray every process of the cluster (actors,
raylet, GCS, idle workers) plus this driver's, during the run: Ray's overhead in CPU, whatever
the load.

    .venv/bin/python bench/ray_batch.py                   # 206 files
    .venv/bin/python bench/ray_batch.py --files 400
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from service.run.processes import cpu_s, descendants_titled

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"


def make_folder(root: Path, data: Path, n: int) -> Path:
    folder = root / "archive"
    folder.mkdir()
    cremad = sorted((data / "cremad_av").glob("*.flv"))
    ravdess = sorted((data / "ravdess").glob("Actor_*/*.flac"))
    half = n // 2
    for i in range(half):
        src = cremad[i % len(cremad)]
        os.link(src, folder / f"c{i:04d}-{src.name}") if src.stat().st_dev == folder.stat().st_dev \
            else (folder / f"c{i:04d}-{src.name}").write_bytes(src.read_bytes())
    for i in range(n - half):
        src = ravdess[i % len(ravdess)]
        (folder / f"r{i:04d}-{src.name}").symlink_to(src)
    return folder


class Sampler(threading.Thread):
    """While a run lasts: the max VmHWM (MB) of each actor, and the CPU seconds that every
    process of the cluster (actors, raylet, GCS, Ray's other workers) spends, from /proc."""

    TITLE = b"MapWorker(MapBatches(Scorer))"

    def __init__(self):
        super().__init__(daemon=True)
        self.peaks: dict[int, float] = {}
        self.stop = threading.Event()
        self.before = set(descendants_titled(self.TITLE))  # a previous run's actors, still exiting
        self.before_decoders = set(descendants_titled(b"service.pipeline.decode_worker"))
        self.decoder_peaks: dict[int, float] = {}
        self.cpu_start = {pid: self._cpu(pid) for pid in descendants_titled(b"")}
        self.cpu_last: dict[int, float] = dict(self.cpu_start)

    @staticmethod
    def _cpu(pid: int) -> float:
        try:
            return cpu_s(pid)
        except OSError:
            return 0.0

    @staticmethod
    def _hwm(pid: int, peaks: dict[int, float]) -> None:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks[pid] = max(peaks.get(pid, 0.0), int(line.split()[1]) / 1024)
        except OSError:
            pass

    def sample(self) -> None:
        for pid in descendants_titled(b""):
            self.cpu_last[pid] = max(self.cpu_last.get(pid, 0.0), self._cpu(pid))
        for pid in set(descendants_titled(self.TITLE)) - self.before:
            self._hwm(pid, self.peaks)
        for pid in set(descendants_titled(b"service.pipeline.decode_worker")) - self.before_decoders:
            self._hwm(pid, self.decoder_peaks)  # each actor's decoder worker (not with --in-process-decode)

    def run(self) -> None:
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(0.2)
        self.own_cpu_s = time.thread_time()  # this thread's reading of /proc: not the driver's work

    def actors_cpu_s(self) -> float:
        """The part of it spent in the actors (their start and bundle load included)."""
        return sum(self.cpu_last[pid] - self.cpu_start.get(pid, 0.0) for pid in self.peaks if pid in self.cpu_last)

    def cluster_cpu_s(self) -> float:
        """CPU seconds of the cluster's processes during the run (an actor that exited
        between two samples loses its last 0.2 s: a small undercount)."""
        return sum(last - self.cpu_start.get(pid, 0.0) for pid, last in self.cpu_last.items())


def run_cli(folder: Path, out: Path, workers: int) -> dict:
    cmd = [sys.executable, "-m", "service.run.cli", "predict", str(folder), "--out", str(out), "--quiet",
           "--workers", str(workers)]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - start
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert os.waitstatus_to_exitcode(status) in (0, 1), proc.stderr.read()[-2000:]
    return {"run": f"emotion-av predict --workers {workers}", "files": len(lines),
            "ok": sum(r["status"] == 200 for r in lines), "wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
            "peak_rss_mb": [usage.ru_maxrss / 1024]}


def run_ray(folder: Path, out: Path, actors: int, isolate: bool = True) -> dict:
    import pyarrow.parquet as pq

    from service.cluster.batch import run_batch

    import resource

    sampler = Sampler()
    sampler.start()
    own = resource.getrusage(resource.RUSAGE_SELF)
    start = time.monotonic()
    summary = run_batch([str(folder)], str(out), actors=actors, num_cpus=1, isolate_decoders=isolate, progress=False)
    wall = time.monotonic() - start
    sampler.stop.set()
    sampler.join()
    sampler.sample()
    now = resource.getrusage(resource.RUSAGE_SELF)
    driver_cpu = (now.ru_utime - own.ru_utime) + (now.ru_stime - own.ru_stime) - sampler.own_cpu_s
    paths = pq.read_table(out, columns=["path"]).column("path").to_pylist()
    assert len(paths) == len(set(paths)) == summary.done, "every input exactly once"
    how = "" if isolate else ", --in-process-decode"
    return {"run": f"ray batch, {actors} actor{'s' * (actors > 1)}{how}", "files": summary.done, "ok": summary.ok,
            "wall_s": wall, "cpu_s": sampler.cluster_cpu_s() + driver_cpu, "actors_cpu_s": sampler.actors_cpu_s(),
            "driver_cpu_s": driver_cpu,
            "peak_rss_mb": sorted(sampler.peaks.values()), "decoder_peak_rss_mb": sorted(sampler.decoder_peaks.values())}


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=206)
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "ray_batch.json"))
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    results, loads = [], {"before": load()}
    with tempfile.TemporaryDirectory(prefix="ray-batch-") as tmp:
        root = Path(tmp)
        folder = make_folder(root, Path(args.data), args.files)
        results.append(run_cli(folder, root / "cli.jsonl", 2))
        loads["after_cli"] = load()
        print(results[-1], file=sys.stderr, flush=True)
        import ray

        start = time.monotonic()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        cluster_start = time.monotonic() - start
        try:
            for actors, isolate in ((1, True), (2, True), (2, False)):
                name = f"ray{actors}{'' if isolate else '-in-process'}"
                results.append(run_ray(folder, root / f"{name}.parquet", actors, isolate))
                loads[f"after_{name}"] = load()
                print(results[-1], file=sys.stderr, flush=True)
        finally:
            ray.shutdown()
    cli = results[0]["wall_s"]
    cli_cpu = results[0]["cpu_s"]
    report = {"files": args.files, "cluster_start_s": cluster_start, "load": loads, "results": results,
              "overhead_wall_2_actors_vs_cli": results[2]["wall_s"] / cli - 1,
              "overhead_cpu_2_actors_vs_cli": results[2]["cpu_s"] / cli_cpu - 1}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"{args.files} files ({args.files // 2} CREMA-D clips repeated, {args.files - args.files // 2} RAVDESS); "
          f"local Ray cluster start {cluster_start:.1f} s (not in the rows); load {loads}")
    print("| run | files | answered | wall s | files/s | wall vs CLI | CPU s (actors; driver) | CPU s per file | "
          "CPU vs CLI | peak RSS per actor (MB) |\n|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        rss = ", ".join(f"{m:.0f}" for m in r["peak_rss_mb"])
        if r.get("decoder_peak_rss_mb"):
            rss += "; decoder workers " + ", ".join(f"{m:.0f}" for m in r["decoder_peak_rss_mb"])
        split = f" ({r['actors_cpu_s']:.1f}; {r['driver_cpu_s']:.1f})" if "actors_cpu_s" in r else ""
        print(f"| {r['run']} | {r['files']} | {r['ok']} | {r['wall_s']:.1f} | {r['files'] / r['wall_s']:.2f} | "
              f"{r['wall_s'] / cli - 1:+.0%} | {r['cpu_s']:.1f}{split} | {r['cpu_s'] / r['files']:.3f} | "
              f"{r['cpu_s'] / cli_cpu - 1:+.0%} | {rss} |")


if __name__ == "__main__":
    main()
