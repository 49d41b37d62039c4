"""`/v1/stream` against a real uvicorn serving the shipped bundle: real CREMA-D clips streamed
end to end agree with POST /predict, the CLI streams at real-time pace, and hostile streams
(oversized, malformed, out of order, a flood, a client that vanishes or never reads) get their
documented close code or drop count while the server stays up and keeps nothing behind."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import REPO_ROOT, VOICED, corpus_dir, running_server
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from service.live import protocol as p
from service.live.client import file_messages, jpeg, stream_file, ws_url

SHIPPED = REPO_ROOT / "models" / "default"
KEY = "live-key"
LIMITS = {"EMOTION_API_KEYS": KEY, "EMOTION_STREAM_MAX_SESSIONS": "2", "EMOTION_STREAM_IDLE_TIMEOUT_S": "3",
          "EMOTION_STREAM_SEND_TIMEOUT_S": "3", "EMOTION_STREAM_PING_S": "2", "EMOTION_STREAM_MAX_MESSAGE_KB": "64"}


@pytest.fixture(scope="module")
def live_server():
    if not (SHIPPED / "manifest.json").is_file():
        pytest.skip("the shipped bundle models/default is not there")
    with running_server(SHIPPED, LIMITS) as srv:
        yield srv


def metric(server, name: str, **labels) -> float:
    """A sample of the server's /metrics (0 when absent)."""
    want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
    for line in httpx.get(server.url + "/metrics").text.splitlines():
        if line.startswith(want + " "):
            return float(line.split()[-1])
    return 0.0


def threads(server) -> int:
    return len(list(Path(f"/proc/{server.proc.pid}/task").iterdir()))


def opened(server, **options):
    ws = connect(ws_url(server.url), additional_headers={"X-API-Key": KEY}, max_size=None, compression=None,
                 legacy=True)
    ws.send(json.dumps({"type": "open", **options}))
    ready = json.loads(ws.recv(timeout=10))
    assert ready["type"] == "ready", ready
    return ws


def close_of(ws, timeout: float = 15.0) -> tuple[int, str]:
    """Read until the server closes; its close code and reason."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ws.recv(timeout=max(0.01, deadline - time.monotonic()))
    except ConnectionClosed as exc:
        return exc.rcvd.code, exc.rcvd.reason
    except TimeoutError:
        pass
    raise AssertionError("the server did not close the session")


def audio(seconds: float, t_ms: int = 0) -> bytes:
    rng = np.random.default_rng(0)
    return p.media_header(p.AUDIO, t_ms) + (rng.normal(0, 3000, int(seconds * p.SAMPLE_RATE))).astype("<i2").tobytes()


def wait_idle(server, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while metric(server, "emotion_stream_sessions") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert metric(server, "emotion_stream_sessions") == 0, "a session outlived its connection"


# --- agreement with POST /predict --------------------------------------------------------------

def test_real_clips_streamed_agree_with_post_predict(live_server):
    clips = sorted(corpus_dir("cremad_av").glob("*.flv"))
    assert len(clips) == 6
    agree, rows = 0, []
    for clip in clips:
        with open(clip, "rb") as fh:
            body = httpx.post(live_server.url + "/predict", files={"file": (clip.name, fh)},
                              headers={"X-API-Key": KEY}, timeout=120).json()
        result = stream_file(live_server.url, clip, pace="fast", api_key=KEY)
        updates, summary = result["updates"], result["summary"]
        assert [u["seq"] for u in updates] == list(range(1, len(updates) + 1)), "one update per interval, in order"
        ends = [u["window"]["end_s"] for u in updates]
        assert ends == sorted(ends) and ends[-1] == pytest.approx(body["duration_s"], abs=0.3)
        assert all(sum(u["dropped"].values()) == 0 for u in updates), "lockstep: nothing dropped"
        last = updates[-1]
        assert last["face_found"] and last["audio_used"] and last["modalities"]["audio"] in VOICED
        assert abs(sum(last["probabilities"].values()) - 1) < 1e-3
        agree += summary["label"] == body["label"]
        rows.append(f"| {clip.name} | {body['label']} | {summary['label']} | "
                    + " ".join(f"{u['window']['end_s']:.1f}:{u['window_label']}" for u in updates) + " |")
    print("\n| clip | POST /predict | stream (whole length) | windows (end s: label) |\n|---|---|---|---|")
    print("\n".join(rows))
    assert agree >= 5, f"{agree} of 6 clips agree"


def test_cli_streams_at_real_time_pace(live_server, tmp_path):
    clip = corpus_dir("cremad_av") / "1001_DFA_HAP_XX.flv"
    out = tmp_path / "updates.jsonl"
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "service.run.cli", "stream", str(clip), "--url", live_server.url,
                           "--api-key", KEY, "--out", str(out)], capture_output=True, text=True, timeout=60)
    took = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    updates, summary = lines[:-1], lines[-1]
    assert summary["type"] == "summary" and summary["label"] in summary["probabilities"]
    assert len(updates) >= 3 and all(u["type"] == "update" for u in updates)
    assert took >= updates[-1]["window"]["end_s"], "real-time pace: not faster than the clip"
    assert all(u["latency_ms"] > 0 for u in updates)
    assert "summary:" in proc.stdout and f"#{updates[0]['seq']}" in proc.stdout


# --- refusals ---------------------------------------------------------------------------------

def test_api_key_from_header_or_open_message(live_server):
    ws = connect(ws_url(live_server.url), legacy=True)
    ws.send(json.dumps({"type": "open"}))
    assert close_of(ws)[0] == p.POLICY
    ws = connect(ws_url(live_server.url), legacy=True)
    ws.send(json.dumps({"type": "open", "api_key": "wrong"}))
    code, reason = close_of(ws)
    assert code == p.POLICY and "unauthorized" in reason
    ws = connect(ws_url(live_server.url), legacy=True)
    ws.send(json.dumps({"type": "open", "api_key": KEY}))  # a browser cannot send headers
    assert json.loads(ws.recv(timeout=10))["type"] == "ready"
    ws.close()


def test_session_cap_refuses_with_1013_then_admits(live_server):
    first, second = opened(live_server), opened(live_server)
    third = connect(ws_url(live_server.url), additional_headers={"X-API-Key": KEY}, legacy=True)
    code, reason = close_of(third)
    assert code == p.TRY_AGAIN and "server_full" in reason
    first.close()
    wait_idle_below(live_server, 2)
    again = opened(live_server)
    again.close()
    second.close()
    assert metric(live_server, "emotion_stream_refused_total", reason="server_full") >= 1
    wait_idle(live_server)


def wait_idle_below(server, n: int) -> None:
    deadline = time.monotonic() + 10
    while metric(server, "emotion_stream_sessions") >= n and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.mark.parametrize("send, code, words", [
    (b"A", p.POLICY, "first message"),                                       # media before "open"
    ('{"type": "hello"}', p.POLICY, "first message must be"),               # another message first
    ('{"type": "open", "window_s": 60}', p.POLICY, "window_s"),             # options out of bounds
    ('{"type": "open", "colour": 1}', p.POLICY, "bad open options"),
    ("not json", p.INVALID_DATA, "not JSON"),
])
def test_bad_opening(live_server, send, code, words):
    ws = connect(ws_url(live_server.url), additional_headers={"X-API-Key": KEY}, legacy=True)
    ws.send(send)
    got, reason = close_of(ws)
    assert got == code and words in reason, reason


@pytest.mark.parametrize("send, code, words", [
    (lambda: b"\x41\x01", p.INVALID_DATA, "header"),                         # a truncated header
    (lambda: p.media_header(0x58, 0) + b"xx", p.UNSUPPORTED, "media kind"),  # an unknown media kind
    (lambda: p.media_header(p.VIDEO, 0, 9) + b"xx", p.UNSUPPORTED, "image format"),
    (lambda: p.media_header(p.AUDIO, 0) + b"odd", p.INVALID_DATA, "odd"),
    (lambda: bytes([p.AUDIO, 7, 0, 0, 0, 0, 0, 0]), p.UNSUPPORTED, "version"),
    (lambda: '{"type": "open"}', p.POLICY, "open already"),                  # wrong order
    (lambda: '{"type": "pause"}', p.UNSUPPORTED, "unknown message type"),
    (lambda: '[1, 2]', p.INVALID_DATA, "JSON object"),
    (lambda: p.media_header(p.VIDEO, 0, 1) + b"\0" * (65 * 1024), p.TOO_BIG, ""),  # over 64 KiB
])
def test_malformed_and_oversized_messages_close_with_their_code(live_server, send, code, words):
    ws = opened(live_server)
    ws.send(audio(0.3))
    ws.send(send())
    got, reason = close_of(ws)
    assert got == code and words in reason, (got, reason)


def test_media_of_a_modality_not_opened(live_server):
    ws = opened(live_server, modalities=["audio"])
    ws.send(p.media_header(p.VIDEO, 0, 1) + jpeg(np.zeros((48, 64), np.uint8)))
    assert close_of(ws) == (p.POLICY, "video sent, but the session was opened without face")


def test_idle_session_is_closed(live_server):
    ws = opened(live_server)
    code, reason = close_of(ws, timeout=10)
    assert code == p.POLICY and reason.startswith("idle")


# --- drops and bad frames -----------------------------------------------------------------------

def test_flood_of_frames_is_dropped_and_counted(live_server):
    """200 frames in well under a second, 40 per second of media: the stream goes on, the
    excess is dropped and counted in the updates and in /metrics; bad images are counted too."""
    before = metric(live_server, "emotion_stream_dropped_frames_total", reason="rate")
    frame = jpeg(np.full((240, 320), 128, np.uint8))
    ws = opened(live_server)
    for i in range(200):
        ws.send(p.media_header(p.VIDEO, i * 25, 1) + frame)
        if i % 4 == 3:
            ws.send(audio(0.1, i * 25))
    time.sleep(1.1)  # past the flood's second of wall time: the next frame is not over the rate
    ws.send(p.media_header(p.VIDEO, 5100, 1) + b"\xff\xd8 not a jpeg")
    ws.send(audio(0.5, 5000))
    ws.send(json.dumps({"type": "end"}))
    updates, summary = [], None
    for text in ws:
        m = json.loads(text)
        updates.append(m) if m["type"] == "update" else None
        summary = m if m["type"] == "summary" else summary
    assert ws.close_code == p.NORMAL
    assert updates and summary is not None
    assert summary["dropped"]["rate"] >= 150, summary
    assert summary["dropped"]["undecodable"] == 1, summary
    seqs = [u["seq"] for u in updates]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert metric(live_server, "emotion_stream_dropped_frames_total", reason="rate") - before == \
        summary["dropped"]["rate"]


def test_client_that_disconnects_mid_window_leaves_nothing(live_server):
    base_threads = threads(live_server)
    for _ in range(3):
        ws = opened(live_server)
        for t in range(3):
            ws.send(audio(0.2, t * 200))
            ws.send(p.media_header(p.VIDEO, t * 200, 1) + jpeg(np.full((240, 320), 90, np.uint8)))
        ws.socket.shutdown(socket.SHUT_RDWR)  # gone mid-window, no close handshake
        ws.socket.close()
        wait_idle(live_server)
    assert metric(live_server, "emotion_stream_closed_total", code="none") >= 3
    assert threads(live_server) <= base_threads + 2, "no worker thread per session left behind"
    assert httpx.get(live_server.url + "/readyz").status_code == 200


def test_client_that_never_reads_is_dropped(live_server):
    """A client with a tiny receive buffer that reads nothing (not even the server's pings):
    it is dropped (an unanswered keepalive ping, then the idle timeout), its session ends, and
    the server serves on."""
    base_threads = threads(live_server)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.connect(("127.0.0.1", live_server.port))
    ws = connect(ws_url(live_server.url), sock=sock, additional_headers={"X-API-Key": KEY}, max_queue=1,
                 ping_interval=None, legacy=True)
    ws.send(json.dumps({"type": "open", "update_interval_s": 0.25, "window_s": 1.0}))
    chunk = audio(0.25)
    started = time.monotonic()
    try:
        while time.monotonic() < started + 30 and metric(live_server, "emotion_stream_sessions"):
            ws.send(chunk)
            time.sleep(0.05)
    except (ConnectionClosed, OSError):
        pass
    took = time.monotonic() - started
    sock.close()
    wait_idle(live_server)
    print(f"the session ended {took:.1f} s after the client stopped reading")
    assert took < 20, "dropped within ping + idle timeout"
    assert threads(live_server) <= base_threads + 2
    assert httpx.get(live_server.url + "/readyz").status_code == 200


def test_no_memory_left_behind_after_sessions(live_server):
    """RSS after a few more sessions is where it was (allocations of the first ones are paid)."""
    clip = corpus_dir("cremad_av") / "1001_DFA_ANG_XX.flv"
    messages = file_messages(clip, 4.0, 360)

    def session() -> None:
        ws = opened(live_server)
        for _, m in messages:
            ws.send(m)
        ws.send(json.dumps({"type": "end"}))
        for _ in ws:
            pass

    def rss() -> float:
        for line in Path(f"/proc/{live_server.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError

    for _ in range(3):
        session()
    before = rss()
    for _ in range(6):
        session()
    wait_idle(live_server)
    assert rss() - before < 30, f"RSS grew {rss() - before:.1f} MB over 6 sessions"


def test_cli_usage_errors(tmp_path):
    """No camera OpenCV can open, no server, no file: exit 2 with the reason, no traceback."""
    cli = [sys.executable, "-m", "service.run.cli", "stream"]
    for args, words in ((["--camera", "97"], "could not open camera 97"),
                        ([str(tmp_path / "none.mp4")], "no such file"),
                        ([str(corpus_dir("cremad_av") / "1001_DFA_HAP_XX.flv"), "--url", "http://127.0.0.1:9"],
                         "cannot open ws://127.0.0.1:9/v1/stream")):
        proc = subprocess.run(cli + args, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and words in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
