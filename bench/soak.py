"""Soak: minutes of mixed traffic at and above the concurrency limit against one server.

    .venv/bin/python bench/soak.py                 # 20 minutes (docs/benchmarks.md's figures)
    .venv/bin/python bench/soak.py --minutes 3     # a short check

One `python -m service` (the hostile-test limits, `EMOTION_MAX_CONCURRENCY` 2 +
`EMOTION_MAX_QUEUE` 2 by default) and `--clients` threads (default: limit + queue + 2, so
some requests always find it full) sending, at random:

- valid clips of three sizes: the real CREMA-D flv clips (~2 s, ~0.1 MB), 720p H.264 of 4 s
  (~0.4 MB) and 20 s (~2 MB) (bench/clips.py; a test pattern without the corpus);
- the hostile files of tests/hostile.py (each with the status and code it must get);
- slow uploads (a clip dribbled over ~3 s: must be answered 200), slowloris uploads (half a
  body, then silence: 408 `upload_timeout`);
- disconnects mid-upload and mid-processing (no answer expected; must leave nothing behind).

Every `--interval` seconds (30) it records the server's RSS, open descriptors, child
processes (its decoder workers apart: their number and RSS) and spool files, and the window's p50/p99 latency and counts by status; at the end
it stops the clients, waits for the server to go idle and prints a markdown summary: RSS drift
from minute 2 to the end, descriptors/children/spool back to the idle count, the decoder pool
back to its size (a killed worker replaced, none leaked), 5xx other than
503/504 (client side and the server's own /metrics), requests unanswered, answers that were
not the expected one. Exit status 1 if any of those fails. Everything goes to `--out` as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import select
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))   # the hostile corpus and its media helper

import clips as clipmod  # noqa: E402
from hostile import HOSTILE_LIMITS, cases  # noqa: E402
from server import REPO, Service, transient_children  # noqa: E402

MB = 1024 * 1024
NO_ANSWER = 0          # a request that got no HTTP answer
DISCONNECTED = -1      # we hung up on purpose


@dataclass
class Job:
    kind: str
    path: Path
    expect: set[int]                  # acceptable statuses besides 503 (overloaded)
    code: str | None = None


@dataclass
class Result:
    t: float                          # seconds since the soak began (at the answer)
    kind: str
    status: int
    latency_s: float
    ok: bool                          # the expected answer (or 503, or a deliberate hang-up)
    detail: str = ""


@dataclass
class Stats:
    results: list[Result] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, r: Result) -> None:
        with self.lock:
            self.results.append(r)

    def since(self, t0: float) -> list[Result]:
        with self.lock:
            return [r for r in self.results if r.t >= t0]


def multipart(path: Path, boundary: str = "soakBOUNDARY7") -> tuple[bytes, bytes]:
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{path.name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    return f"multipart/form-data; boundary={boundary}".encode(), head + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()


def _head(port: int, ctype: bytes, length: int) -> bytes:
    return (f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
            f"Content-Length: {length}\r\n").encode() + b"Content-Type: " + ctype + b"\r\n\r\n"


def _read_status(s: socket.socket, timeout: float) -> int:
    s.settimeout(timeout)
    raw = b""
    try:
        while b"\r\n" not in raw:
            chunk = s.recv(4096)
            if not chunk:
                break
            raw += chunk
    except OSError:
        pass
    m = re.match(rb"HTTP/1\.1 (\d{3})", raw)
    return int(m[1]) if m else NO_ANSWER


class Client:
    def __init__(self, url: str, port: int, stats: Stats, t0: float, timeout: float):
        self.url, self.port, self.stats, self.t0, self.timeout = url, port, stats, t0, timeout
        self.http = httpx.Client(timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def _record(self, job: Job, status: int, start: float, detail: str = "") -> int:
        ok = status == DISCONNECTED or status == 503 or status in job.expect
        self.stats.add(Result(time.monotonic() - self.t0, job.kind, status, time.monotonic() - start, ok, detail))
        return status

    def post(self, job: Job) -> int:
        start = time.monotonic()
        try:
            with open(job.path, "rb") as fh:
                r = self.http.post(self.url + "/predict", files={"file": (job.path.name, fh, "application/octet-stream")})
        except httpx.HTTPError as exc:
            return self._record(job, NO_ANSWER, start, type(exc).__name__)
        detail = ""
        if r.status_code != 200:
            try:
                detail = r.json()["error"]["code"]
            except (ValueError, KeyError, TypeError):
                detail = "not-json"
        if job.code and r.status_code not in (200, 503) and detail != job.code:
            self.stats.add(Result(time.monotonic() - self.t0, job.kind, r.status_code, time.monotonic() - start,
                                  False, f"expected {job.code}, got {detail}"))
            return r.status_code
        return self._record(job, r.status_code, start, detail)

    def slow(self, job: Job, seconds: float = 3.0, pieces: int = 12) -> int:
        """The whole body, dribbled over `seconds`; like any careful client it stops sending
        when the server has answered early (a 503 before reading the body) and reads that."""
        start = time.monotonic()
        ctype, body = multipart(job.path)
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout) as s:
                s.sendall(_head(self.port, ctype, len(body)))
                step = -(-len(body) // pieces)
                try:
                    for i in range(0, len(body), step):
                        if select.select([s], [], [], 0)[0]:
                            break                       # answered before the end of the body
                        s.sendall(body[i:i + step])
                        time.sleep(seconds / pieces)
                except OSError:
                    pass                                # the answer may still be readable
                return self._record(job, _read_status(s, self.timeout), start)
        except OSError as exc:
            return self._record(job, NO_ANSWER, start, type(exc).__name__)

    def slowloris(self, job: Job) -> int:
        """Half the body, then nothing: the server must give up with 408 on its own."""
        start = time.monotonic()
        ctype, body = multipart(job.path)
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout) as s:
                s.sendall(_head(self.port, ctype, len(body)) + body[: len(body) // 2])
                return self._record(job, _read_status(s, self.timeout), start)
        except OSError as exc:
            return self._record(job, NO_ANSWER, start, type(exc).__name__)

    def disconnect(self, job: Job, mid_upload: bool) -> int:
        """Hang up mid-upload, or once the whole body is sent (mid-processing)."""
        start = time.monotonic()
        ctype, body = multipart(job.path)
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout) as s:
                s.sendall(_head(self.port, ctype, len(body)))
                s.sendall(body[: len(body) // 2] if mid_upload else body)
                time.sleep(random.uniform(0.05, 0.6))
        except OSError:
            pass
        return self._record(job, DISCONNECTED, start, "mid-upload" if mid_upload else "mid-processing")


def make_jobs(workdir: Path, cache: Path, data: Path) -> dict[str, list[Job]]:
    """Valid clips of three sizes and the hostile corpus, made once."""
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    prepared = {c.name: c for c in clipmod.prepare(["cremad", "720p-4s"], cache, data, log=log)}
    base, real = clipmod._base_clip(cache, data)
    twenty = clipmod._looped(base, 20.0, cache / f"720p-20s-{'face' if real else 'pattern'}-{clipmod.RECIPE}.mp4")
    valid = [Job("valid-720p-4s", prepared["720p-4s"].files[0], {200}),
             Job("valid-720p-20s", twenty, {200})]
    if "cremad" in prepared:
        valid += [Job("valid-cremad", f, {200}) for f in prepared["cremad"].files]
    hostile = []
    for case in cases():
        d = workdir / case.name
        d.mkdir()
        hostile.append(Job(f"hostile-{case.name}", case.build(d), {case.status}, case.code))
    return {"valid": valid, "hostile": hostile}


# kind -> weight (of 100)
MIX = {"valid": 45, "hostile": 28, "slow": 10, "slowloris": 3, "disconnect_upload": 7, "disconnect_processing": 7}


def worker(client: Client, jobs: dict[str, list[Job]], stop: threading.Event, rng: random.Random) -> None:
    kinds, weights = zip(*MIX.items())
    small = [j for j in jobs["valid"] if "20s" not in j.kind]
    while not stop.is_set():
        kind = rng.choices(kinds, weights)[0]
        if kind == "valid":
            status = client.post(rng.choice(jobs["valid"]))
        elif kind == "hostile":
            status = client.post(rng.choice(jobs["hostile"]))
        elif kind == "slow":
            j = rng.choice(small)
            status = client.slow(Job("slow-upload", j.path, {200}))
        elif kind == "slowloris":
            status = client.slowloris(Job("slowloris", rng.choice(small).path, {408}, "upload_timeout"))
        else:
            j = rng.choice(jobs["valid"])
            status = client.disconnect(Job(kind, j.path, set()), mid_upload=kind == "disconnect_upload")
        if status == 503:
            time.sleep(rng.uniform(0.3, 1.0))   # honour the back-pressure a little, as a client would


def spool_files(spool: Path) -> int:
    return sum(len(files) + len(dirs) for _, dirs, files in os.walk(spool))


def snapshot(svc: Service, spool: Path) -> dict:
    p = psutil.Process(svc.proc.pid)
    kids = transient_children(p.pid)
    workers = svc.decoder_workers()
    return {"rss_mb": round(p.memory_info().rss / MB, 1), "fds": p.num_fds(), "children": len(kids),
            "workers": len(workers), "workers_rss_mb": round(sum(_rss(pid) for pid in workers) / MB, 1),
            "spool": spool_files(spool)}


def _rss(pid: int) -> int:
    try:
        return psutil.Process(pid).memory_info().rss
    except psutil.Error:
        return 0


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def wait_idle(svc: Service, spool: Path, fds: int, workers: int, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        snap = snapshot(svc, spool)
        if (snap["children"] == 0 and snap["workers"] == workers and snap["spool"] == 0 and snap["fds"] <= fds) \
                or time.monotonic() > deadline:
            return snap
        time.sleep(0.5)


def server_5xx(url: str) -> dict[str, float]:
    """5xx by status from the server's own /metrics (it sees the requests whose client left too)."""
    out: dict[str, float] = {}
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        m = re.match(r'emotion_requests_total\{route="[^"]*",status="(5\d\d)"\} (\S+)', line)
        if m:
            out[m[1]] = out.get(m[1], 0) + float(m[2])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--interval", type=float, default=30.0, help="seconds between samples (30)")
    ap.add_argument("--concurrency", type=int, default=2, help="EMOTION_MAX_CONCURRENCY of the server")
    ap.add_argument("--queue", type=int, default=2, help="EMOTION_MAX_QUEUE of the server")
    ap.add_argument("--clients", type=int, default=0, help="client threads (default: concurrency + queue + 2)")
    ap.add_argument("--model-dir", type=Path, default=REPO / "models" / "default")
    ap.add_argument("--cache", type=Path, default=HERE / ".clips")
    ap.add_argument("--data", type=Path, default=clipmod.DEFAULT_DATA)
    ap.add_argument("--seed", type=int, default=20)
    ap.add_argument("--max-drift", type=float, default=10.0, help="RSS drift allowed from minute 2 to the end, %%")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "soak-latest.json")
    args = ap.parse_args(argv)
    clients_n = args.clients or args.concurrency + args.queue + 2
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731

    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    spool = workdir / "spool"
    spool.mkdir()
    log("[soak] preparing clips and the hostile corpus ...")
    (workdir / "hostile").mkdir()
    jobs = make_jobs(workdir / "hostile", cache=args.cache, data=args.data)
    env = {**HOSTILE_LIMITS, "EMOTION_TMP_DIR": str(spool), "EMOTION_UPLOAD_TIMEOUT_S": "8",
           "EMOTION_MAX_CONCURRENCY": str(args.concurrency), "EMOTION_MAX_QUEUE": str(args.queue),
           "EMOTION_LOG_LEVEL": "warning"}
    stats = Stats()
    samples: list[dict] = []
    with Service(args.model_dir, env) as svc:
        log(f"[soak] service ready in {svc.wait_ready():.1f} s; warming up")
        warm = Client(svc.url, svc.port, Stats(), time.monotonic(), 120)
        for j in jobs["valid"][:3] + jobs["hostile"]:
            warm.post(j)
        warm.close()
        idle = wait_idle(svc, spool, fds=10**6, workers=args.concurrency, timeout=30)
        time.sleep(1)
        idle = snapshot(svc, spool)
        log(f"[soak] idle: {idle}; {clients_n} clients for {args.minutes:g} min "
            f"(server: {args.concurrency} processing + {args.queue} queued)")

        stop = threading.Event()
        t0 = time.monotonic()
        clients = [Client(svc.url, svc.port, stats, t0, 120) for _ in range(clients_n)]
        threads = [threading.Thread(target=worker, args=(c, jobs, stop, random.Random(args.seed + i)), daemon=True)
                   for i, c in enumerate(clients)]
        for t in threads:
            t.start()
        end = t0 + args.minutes * 60
        next_sample = t0 + args.interval
        header = f"{'t':>6} {'rss_mb':>7} {'fds':>4} {'kids':>4} {'spool':>5} {'p50_s':>6} {'p99_s':>6}  statuses"
        log(header)
        while True:
            now = time.monotonic()
            if now >= end:
                break
            time.sleep(min(next_sample, end) - now)
            if time.monotonic() >= next_sample:
                window = stats.since(next_sample - args.interval - t0)
                window = [r for r in window if r.t < next_sample - t0]
                lat = [r.latency_s for r in window if r.status > 0]
                row = {"t_s": round(next_sample - t0), **snapshot(svc, spool),
                       "p50_s": percentile(lat, 50), "p99_s": percentile(lat, 99),
                       "statuses": dict(sorted(Counter(str(r.status) for r in window).items()))}
                samples.append(row)
                log(f"{row['t_s']:>6} {row['rss_mb']:>7} {row['fds']:>4} {row['children']:>4} {row['spool']:>5} "
                    f"{row['p50_s'] or 0:>6.2f} {row['p99_s'] or 0:>6.2f}  {row['statuses']}")
                next_sample += args.interval
        stop.set()
        for t in threads:
            t.join(180)
        for c in clients:
            c.close()
        elapsed = time.monotonic() - t0
        final = wait_idle(svc, spool, idle["fds"], idle["workers"])
        log(f"[soak] after the clients stopped: {final}")
        srv5xx = server_5xx(svc.url)
        alive = svc.proc.poll() is None and httpx.get(svc.url + "/readyz", timeout=10).status_code == 200

    shutil.rmtree(workdir, ignore_errors=True)
    results = stats.results
    by_status = Counter(r.status for r in results)
    unanswered = [r for r in results if r.status == NO_ANSWER]
    bad_5xx = sum(n for s, n in by_status.items() if 500 <= s < 600 and s not in (503, 504))
    srv_bad = sum(n for s, n in srv5xx.items() if s not in ("503", "504"))
    wrong = [r for r in results if not r.ok and r.status != NO_ANSWER]
    at2 = next((s for s in samples if s["t_s"] >= 120), samples[0] if samples else None)
    last = samples[-1] if samples else None
    drift = (last["rss_mb"] - at2["rss_mb"]) / at2["rss_mb"] * 100 if at2 and last else 0.0
    valid_lat = [r.latency_s for r in results if r.kind.startswith("valid") and r.status == 200]
    checks = {
        f"RSS drift minute {at2['t_s'] / 60 if at2 else 0:g} -> end <= {args.max_drift:g} %": abs(drift) <= args.max_drift,
        "fds back to idle": final["fds"] <= idle["fds"],
        "children back to idle (0)": final["children"] == 0,
        f"decoder workers back to the pool's size ({idle['workers']})": final["workers"] == idle["workers"],
        "spool empty": final["spool"] == 0,
        "no 5xx other than 503/504 (clients)": bad_5xx == 0,
        "no 5xx other than 503/504 (server /metrics)": srv_bad == 0,
        "every request answered": not unanswered,
        "every answer the expected one": not wrong,
        "server ready at the end": alive,
    }
    n_answered = sum(1 for r in results if r.status > 0)
    rows = [
        ("duration", f"{elapsed / 60:.1f} min, {clients_n} clients against {args.concurrency} processing + "
                     f"{args.queue} queued"),
        ("requests", f"{len(results)} ({len(results) / elapsed:.2f}/s); answered {n_answered}, deliberate "
                     f"hang-ups {by_status.get(DISCONNECTED, 0)}, unanswered {len(unanswered)}"),
        ("by status", ", ".join(f"{s}: {n}" for s, n in sorted(by_status.items()) if s > 0)),
        ("5xx other than 503/504", f"{bad_5xx} (clients), {srv_bad:g} (server /metrics: {srv5xx or 'none'})"),
        ("answers not the expected one", f"{len(wrong)}" + (f" (e.g. {wrong[0].kind} {wrong[0].status} "
                                                             f"{wrong[0].detail})" if wrong else "")),
        ("RSS", f"{at2['rss_mb'] if at2 else '?'} MB at minute {at2['t_s'] / 60 if at2 else 0:g} -> "
                f"{last['rss_mb'] if last else '?'} MB at the end ({drift:+.1f} %); idle before {idle['rss_mb']} MB"),
        ("open fds", f"idle {idle['fds']} -> peak {max((s['fds'] for s in samples), default=0)} -> "
                     f"{final['fds']} after"),
        ("child processes (not the decoder workers)",
         f"peak {max((s['children'] for s in samples), default=0)} -> {final['children']} after"),
        ("decoder workers, their RSS", f"{idle['workers']} ({idle['workers_rss_mb']} MB) idle -> {final['workers']} "
                                       f"({final['workers_rss_mb']} MB) after"),
        ("spool entries", f"peak {max((s['spool'] for s in samples), default=0)} -> {final['spool']} after"),
        ("latency, valid clips (200)", f"p50 {percentile(valid_lat, 50) or 0:.2f} s, "
                                       f"p99 {percentile(valid_lat, 99) or 0:.2f} s"),
    ]
    print("| soak | result |\n|---|---|")
    for k, v in rows:
        print(f"| {k} | {v} |")
    print()
    print("| every 30 s: t | RSS MB | fds | children | workers (RSS MB) | spool | p50 s | p99 s | statuses |\n"
          "|---|---|---|---|---|---|---|---|---|")
    for s in samples:
        print(f"| {s['t_s']} | {s['rss_mb']} | {s['fds']} | {s['children']} | {s['workers']} ({s['workers_rss_mb']}) | "
              f"{s['spool']} | "
              f"{(s['p50_s'] or 0):.2f} | {(s['p99_s'] or 0):.2f} | "
              f"{' '.join(f'{k}:{v}' for k, v in s['statuses'].items())} |")
    print()
    for name, ok in checks.items():
        print(f"- [{'x' if ok else ' '}] {name}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "args": {k: str(v) for k, v in vars(args).items()}, "idle": idle, "final": final, "samples": samples,
        "by_status": {str(k): v for k, v in by_status.items()}, "server_5xx": srv5xx, "checks": checks,
        "rss_drift_pct": drift, "wrong": [r.__dict__ for r in wrong[:50]],
        "results": [r.__dict__ for r in results]}, indent=1))
    log(f"[soak] wrote {args.out}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
