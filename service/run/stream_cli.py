"""`emotion-av stream FILE [--realtime | --fast] [--url URL] [--out updates.jsonl]` and
`emotion-av stream --camera [N] [--seconds S]`: a file or a camera streamed to a running
server's `/v1/stream` (docs/streaming.md), each rolling answer printed as it comes (one line:
the window, the smoothed label and its probability, the face and voice flags, the server's
latency) or, with --out, written as JSON lines (the updates, then the summary).

--realtime (default) sends the media at the pace it was recorded; --fast sends as fast as the
server answers (one update interval, then its update: every window is answered). --camera reads
frames with OpenCV (no microphone: OpenCV has no audio), until Ctrl-C or --seconds.

Exit status: 0 when the session ended normally, 1 when the server closed it with an error,
2 for a usage error (a camera OpenCV cannot open, an unreadable file).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO


def describe(update: dict[str, Any]) -> str:
    w = update["window"]
    label = update["label"]
    p = f"{update['probabilities'][label]:.2f}" if label else "-"
    return (f"#{update['seq']:<4d} {w['start_s']:6.2f}-{w['end_s']:6.2f}s  {label or '(no signal)':<10s} {p}  "
            f"face={'yes' if update['face_found'] else 'no ':<3s} voice={update['modalities']['audio']:<13s} "
            f"latency={update['latency_ms']:.0f} ms")


def stream_command(args: argparse.Namespace) -> int:
    from service.live.client import Session, StreamError, camera_messages, open_camera, stream_file

    out: TextIO = open(args.out, "w") if args.out else None
    key = args.api_key or os.environ.get("EMOTION_API_KEY")

    def on_update(update: dict[str, Any]) -> None:
        if out is not None:
            out.write(json.dumps(update) + "\n")
            out.flush()
        if out is None or not args.quiet:
            print(describe(update), flush=True)

    try:
        if args.camera is not None:
            cap = open_camera(args.camera)
            session = Session(args.url, key, modalities=("face",), window_s=args.window_s,
                              update_interval_s=args.interval_s)
            try:
                for _, message in camera_messages(cap, session.ready["limits"]["frame_fps"], args.seconds):
                    session.send(message)
                    while not session.messages.empty():
                        item = session.messages.get()
                        if item is None:
                            raise StreamError(f"the server closed the session: {session.close_code} "
                                              f"{session.close_reason}")
                        on_update(item) if item["type"] == "update" else None
            except KeyboardInterrupt:
                pass
            finally:
                session.close()
            return 0
        if not args.file:
            print("emotion-av stream: error: give a FILE or --camera", file=sys.stderr)
            return 2
        if not Path(args.file).is_file():
            print(f"emotion-av stream: error: no such file: {args.file}", file=sys.stderr)
            return 2
        result = stream_file(args.url, Path(args.file), pace="fast" if args.fast else "realtime", api_key=key,
                             on_update=on_update, window_s=args.window_s, update_interval_s=args.interval_s)
        summary = result["summary"]
        if out is not None:
            out.write(json.dumps(summary) + "\n")
        print(f"summary: {summary['label']} over {summary['media_s']:.2f} s ({summary['answered']} windows answered, "
              f"{sum(summary['dropped'].values())} frames dropped)", flush=True)
        return 0
    except StreamError as exc:
        print(f"emotion-av stream: {exc}", file=sys.stderr)
        return 2 if "camera" in str(exc) or "cannot open" in str(exc) else 1
    finally:
        if out is not None:
            out.close()


def add_stream_parser(sub) -> None:
    p = sub.add_parser("stream", help="stream a file or a camera to a server's /v1/stream",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", nargs="?", metavar="FILE", help="a video or a voice recording")
    pace = p.add_mutually_exclusive_group()
    pace.add_argument("--realtime", action="store_true", help="send at the recording's pace (default)")
    pace.add_argument("--fast", action="store_true", help="send as fast as the server answers")
    p.add_argument("--camera", type=int, nargs="?", const=0, metavar="N", help="stream OpenCV camera N (default 0)")
    p.add_argument("--seconds", type=float, help="with --camera: stop after this long")
    p.add_argument("--url", default="http://127.0.0.1:8000", help="the server (default: %(default)s)")
    p.add_argument("--api-key", help="when the server sets keys (default: $EMOTION_API_KEY)")
    p.add_argument("--out", "-o", help="write the updates and the summary as JSON lines")
    p.add_argument("--quiet", "-q", action="store_true", help="with --out: print only the summary")
    p.add_argument("--window-s", type=float, default=3.0, help="rolling window (default %(default)s s)")
    p.add_argument("--interval-s", type=float, default=0.5, help="update interval (default %(default)s s)")
    p.set_defaults(func=stream_command)
