"""Latency, backlog and memory of `/v1/stream` (docs/streaming.md) on one server.

    .venv/bin/python bench/stream_latency.py                          # 1 session 10 min, then 4 sessions 2 min
    .venv/bin/python bench/stream_latency.py --single-s 60 --multi-s 60   # a short check

One `python -m service` on the shipped bundle (models/default). Each session streams the six
CREMA-D clips one after another, looped, at real-time pace (PCM16 chunks of 100 ms, JPEG
frames at the server's frame_fps), with the default options (3 s window, an update every 0.5 s,
i.e. 2 updates per second). For every update:

- server latency: the update's `latency_ms`, from the arrival of the last media message of its
  window to the update being written (what the server controls);
- client latency: from sending that message to receiving the update (adds the loopback and
  the client's own threads);
- backlog: `updates_skipped` (update times passed while the previous one was computed) and the
  frames dropped, first half of the run against the second (growth = a server that cannot keep up).

The server's RSS is sampled every 5 s; its drift is the last minute's median against the second
minute's. The machine's load average is printed beside the figures (the machine is shared).
Results as a markdown table, and JSON with --out.
"""
from __future__ import annotations

import argparse
import bisect
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from service.live import protocol as p  # noqa: E402
from service.live.client import Session, file_messages  # noqa: E402
from service.run.harness import ServiceProcess  # noqa: E402

DATA = Path(os.environ.get("EMOTION_DATA_DIR", REPO.parent / "shared" / "data"))


def looped(clips: list[list[tuple[float, bytes]]], seconds: float):
    """The clips' messages one after another, re-timed, until `seconds` of media. The audio runs
    on without a gap (each clip starts where the last one's audio ended, as a microphone's
    would); a clip's video that outlasts its audio overlaps the next clip's first frames, which
    the server drops as denser than frame_fps."""
    offset = 0.0
    while offset < seconds:
        for messages in clips:
            audio_end = 0.0
            for t, message in messages:
                kind, _, fmt, _, _ = p.HEADER.unpack_from(message)
                if kind == p.AUDIO:
                    audio_end = t
                yield offset + t, p.media_header(kind, (offset + t) * 1000, fmt) + message[p.HEADER.size:]
            offset += audio_end
            if offset >= seconds:
                return


def run_session(url: str, clips, seconds: float, out: dict) -> None:
    session = Session(url)
    sent_t: list[float] = []
    sent_wall: list[float] = []
    updates: list[dict] = []

    def read() -> None:
        while True:
            item = session.messages.get()
            if item is None:
                return
            if item["type"] == "update":
                item["_recv"] = time.monotonic()
                updates.append(item)
            elif item["type"] == "summary":
                out["summary"] = item

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    started = time.monotonic()
    try:
        for t, message in looped(clips, seconds):
            delay = started + t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            session.send(message)
            sent_t.append(t)
            sent_wall.append(time.monotonic())
        session.end()
    except Exception as exc:  # reported with the results, beside the server's own log lines
        out["error"] = f"{type(exc).__name__}: {exc}"
    reader.join(timeout=30)
    session.close()
    for u in updates:
        i = bisect.bisect_right(sent_t, u["window"]["end_s"] + 1e-6) - 1
        u["_client_ms"] = (u["_recv"] - sent_wall[i]) * 1000.0 if i >= 0 else None
    out["updates"] = updates
    out["media_s"] = seconds


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def median(values) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))] if values else float("nan")


def phase(server: ServiceProcess, clips, sessions: int, seconds: float) -> dict:
    outs = [{} for _ in range(sessions)]
    rss: list[tuple[float, float]] = []
    loads = [os.getloadavg()[0]]
    threads = [threading.Thread(target=run_session, args=(server.url, clips, seconds, o)) for o in outs]
    started = time.monotonic()
    for th in threads:
        th.start()
        time.sleep(0.13)  # sessions out of step, as real clients are
    while any(th.is_alive() for th in threads):
        rss.append((time.monotonic() - started, rss_mb(server.proc.pid)))
        loads.append(os.getloadavg()[0])
        for th in threads:
            th.join(timeout=5.0 / len(threads))
    updates = [u for o in outs for u in o.get("updates", [])]
    half = seconds / 2
    first = [o for o in outs if o.get("updates")]
    skipped = [(o["updates"][-1]["updates_skipped"], next((u["updates_skipped"] for u in o["updates"]
                                                           if u["window"]["end_s"] >= half), 0)) for o in first]
    dropped = [sum(o["updates"][-1]["dropped"].values()) for o in first]
    server_ms = [u["latency_ms"] for u in updates]
    client_ms = [u["_client_ms"] for u in updates if u["_client_ms"] is not None]
    lat_first = [u["latency_ms"] for u in updates if u["window"]["end_s"] < half]
    lat_second = [u["latency_ms"] for u in updates if u["window"]["end_s"] >= half]
    minute = [r for t, r in rss if 60 <= t < 120]
    last = [r for t, r in rss if t >= rss[-1][0] - 60] if rss else []
    return {
        "sessions": sessions, "media_s": seconds, "updates": len(updates),
        "expected_updates": int(sessions * seconds / 0.5),
        "server_ms": {"median": median(server_ms), "p95": pct(server_ms, 0.95)},
        "client_ms": {"median": median(client_ms), "p95": pct(client_ms, 0.95)},
        "server_ms_by_half": {"first": median(lat_first), "second": median(lat_second)},
        "compute_ms_median": median(u["compute_ms"] for u in updates),
        "skipped_at_half_and_end": skipped, "dropped_frames": dropped,
        "rss_mb": {"start": rss[0][1], "minute_2_median": statistics.median(minute) if minute else None,
                   "last_minute_median": statistics.median(last) if last else None, "max": max(r for _, r in rss)},
        "load_avg": {"min": min(loads), "median": statistics.median(loads), "max": max(loads)},
        "summaries": [o.get("summary", {}).get("label") for o in outs],
        "client_errors": [o["error"] for o in outs if "error" in o],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--single-s", type=float, default=600, help="media seconds of the 1-session run (default 600)")
    ap.add_argument("--multi-s", type=float, default=120, help="media seconds of the 4-session run (default 120)")
    ap.add_argument("--sessions", type=int, default=4)
    ap.add_argument("--out", help="JSON results")
    args = ap.parse_args()
    clip_dir = DATA / "cremad_av"
    paths = sorted(clip_dir.glob("*.flv"))
    if not paths:
        sys.exit(f"no CREMA-D clips in {clip_dir} (EMOTION_DATA_DIR)")
    server = ServiceProcess(REPO / "models" / "default",
                            {"EMOTION_LOG_LEVEL": "warning", "EMOTION_STREAM_MAX_SESSIONS": str(max(4, args.sessions))})
    try:
        server.wait_ready()
        probe = Session(server.url)
        ready = probe.ready
        probe.close()
        clips = [file_messages(path, ready["limits"]["frame_fps"], 360) for path in paths]
        results = [phase(server, clips, 1, args.single_s), phase(server, clips, args.sessions, args.multi_s)]
    finally:
        errors = [line for line in server.logs().splitlines() if '"level": "error"' in line]
        server.stop()
    for line in errors:
        print("server error:", line[:4000])
    print(f"\nmachine: {os.cpu_count()} CPUs, load average during each run in the table\n")
    print("| sessions | media s each | updates (expected) | server median / p95 ms | client median / p95 ms "
          "| compute median ms | server median 1st / 2nd half | skipped at half → end | frames dropped "
          "| RSS MB start / min 2 / last min / max | load min / median / max |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        rs, ld = r["rss_mb"], r["load_avg"]
        print(f"| {r['sessions']} | {r['media_s']:.0f} | {r['updates']} ({r['expected_updates']}) "
              f"| {r['server_ms']['median']:.0f} / {r['server_ms']['p95']:.0f} "
              f"| {r['client_ms']['median']:.0f} / {r['client_ms']['p95']:.0f} | {r['compute_ms_median']:.0f} "
              f"| {r['server_ms_by_half']['first']:.0f} / {r['server_ms_by_half']['second']:.0f} "
              f"| {', '.join(f'{a}→{b}' for b, a in r['skipped_at_half_and_end'])} "
              f"| {', '.join(str(d) for d in r['dropped_frames'])} "
              f"| {rs['start']:.0f} / {rs['minute_2_median'] or float('nan'):.0f} / "
              f"{rs['last_minute_median'] or float('nan'):.0f} / {rs['max']:.0f} "
              f"| {ld['min']:.1f} / {ld['median']:.1f} / {ld['max']:.1f} |")
    for r in results:
        for error in r["client_errors"]:
            print(f"{r['sessions']} session(s): a session ended early: {error}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
