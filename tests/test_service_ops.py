"""Operations: timeouts and cancellation, backpressure under load, metrics, request ids,
API keys (schema-based fuzzing with response checks: tests/test_contract.py)."""
from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from conftest import corpus_dir, running_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory) -> Path:
    """A 120 s 1280x720 H.264/AAC clip of a real face: a CREMA-D clip encoded once, looped by stream copy."""
    src = corpus_dir("cremad_av") / "1001_DFA_HAP_XX.flv"
    d = tmp_path_factory.mktemp("long")
    base, out = d / "base.mp4", d / "long.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(src), "-vf", "scale=1280:720", "-r", "25",
                    "-c:v", "libx264", "-preset", "veryfast", "-g", "25", "-c:a", "aac", str(base)], check=True)
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-stream_loop", "-1", "-i", str(base), "-t", "120",
                    "-c", "copy", str(out)], check=True)
    return out


def metric(text: str, name: str, labels: str = "") -> float:
    m = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def wait_for(cond, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if cond():
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout} s")


def test_processing_timeout_is_504_and_stops_the_decoder(quick_bundle, long_clip):
    with running_server(quick_bundle, {"EMOTION_REQUEST_TIMEOUT_S": "1"}) as srv:
        workers = srv.decoder_workers()
        start = time.monotonic()
        with open(long_clip, "rb") as fh:
            r = httpx.post(srv.url + "/predict", files={"file": ("long.mp4", fh, "video/mp4")}, timeout=60)
        elapsed = time.monotonic() - start
        assert r.status_code == 504 and r.json()["error"]["code"] == "processing_timeout"
        assert elapsed < 5, elapsed  # answered at the budget, not after the work
        wait_for(lambda: srv.children() == [], 2)
        # the worker that was decoding was killed, and another took its place
        wait_for(lambda: len(srv.decoder_workers()) == len(workers) == 2 and srv.decoder_workers() != workers, 20)
        assert list(srv.tmp.iterdir()) == []
        assert httpx.get(srv.url + "/healthz").status_code == 200


def test_client_disconnect_cancels_the_work(quick_bundle, long_clip):
    with running_server(quick_bundle) as srv:
        data = long_clip.read_bytes()
        head = (b'--b\r\nContent-Disposition: form-data; name="file"; filename="long.mp4"\r\n\r\n')
        body = head + data + b"\r\n--b--\r\n"
        with socket.create_connection(("127.0.0.1", srv.port)) as s:
            s.sendall(b"POST /predict?timeline=true HTTP/1.1\r\nHost: x\r\n"
                      b"content-type: multipart/form-data; boundary=b\r\n"
                      + f"content-length: {len(body)}\r\n\r\n".encode() + body)
            wait_for(lambda: metric(httpx.get(srv.url + "/metrics").text, "emotion_requests_in_flight") == 1, 10)
            time.sleep(0.3)
        # the client is gone: the request's thread stops and its decoder worker is killed (and
        # replaced), well before the full clip would have been processed (about 6 s on 2 cores)
        took = wait_for(lambda: metric(httpx.get(srv.url + "/metrics").text, "emotion_requests_in_flight") == 0, 10)
        assert took < 2.5, took
        wait_for(lambda: srv.children() == [] and len(srv.decoder_workers()) == 2, 20)
        text = httpx.get(srv.url + "/metrics").text
        assert metric(text, "emotion_rejected_total", '{reason="cancelled"}') == 1
        assert list(srv.tmp.iterdir()) == []


def test_fifty_concurrent_uploads_are_all_answered(quick_bundle):
    """50 uploads at once against 2 workers + 4 queued: each gets 200 or 503 + Retry-After,
    none is lost, no 5xx other than 503, and memory stays bounded."""
    clip = corpus_dir("cremad_av") / "1001_DFA_ANG_XX.flv"
    data = clip.read_bytes()
    with running_server(quick_bundle, {"EMOTION_MAX_CONCURRENCY": "2", "EMOTION_MAX_QUEUE": "4"}) as srv:
        ready_rss = srv.peak_rss_mb()

        async def one(client: httpx.AsyncClient) -> httpx.Response:
            return await client.post("/predict", files={"file": (clip.name, data, "video/x-flv")})

        async def burst() -> list[httpx.Response]:
            limits = httpx.Limits(max_connections=50)
            async with httpx.AsyncClient(base_url=srv.url, timeout=120, limits=limits) as client:
                return await asyncio.gather(*[one(client) for _ in range(50)])

        start = time.monotonic()
        responses = asyncio.run(burst())
        elapsed = time.monotonic() - start
        statuses = [r.status_code for r in responses]
        print(f"50 uploads in {elapsed:.1f} s: {statuses.count(200)} x 200, {statuses.count(503)} x 503; "
              f"peak RSS {ready_rss:.0f} -> {srv.peak_rss_mb():.0f} MB")
        assert len(statuses) == 50 and set(statuses) <= {200, 429, 503}, statuses
        assert statuses.count(200) >= 6  # at least the ones that fit in workers + queue
        assert all(r.headers.get("retry-after") for r in responses if r.status_code != 200)
        assert elapsed < 90
        text = httpx.get(srv.url + "/metrics").text
        assert metric(text, "emotion_requests_in_flight") == 0 and metric(text, "emotion_requests_queued") == 0
        assert metric(text, "emotion_rejected_total", '{reason="overloaded"}') == statuses.count(503)
        assert srv.peak_rss_mb() < ready_rss + 400, (ready_rss, srv.peak_rss_mb())
        assert list(srv.tmp.iterdir()) == []


def test_metrics_and_request_ids(server):
    clip = corpus_dir("cremad_av") / "1001_DFA_NEU_XX.flv"
    with open(clip, "rb") as fh:
        r = httpx.post(server.url + "/predict", files={"file": (clip.name, fh, "video/x-flv")},
                       headers={"X-Request-ID": "my-trace-42"}, timeout=60)
    assert r.status_code == 200 and r.headers["x-request-id"] == "my-trace-42"
    junk = httpx.get(server.url + "/healthz", headers={"X-Request-ID": "bad id\twith spaces"})
    assert re.fullmatch(r"[0-9a-f]{32}", junk.headers["x-request-id"])  # replaced, not echoed
    text = httpx.get(server.url + "/metrics").text
    assert metric(text, "emotion_requests_total", '{route="/predict",status="200"}') >= 1
    assert metric(text, "emotion_stage_duration_seconds_count", '{stage="face_detection"}') >= 1
    assert metric(text, "emotion_request_duration_seconds_count", '{route="/predict"}') >= 1
    assert "emotion_requests_queued" in text
    lines = [line for line in server.logs().splitlines() if "my-trace-42" in line]
    assert any('"route": "/predict"' in line and '"status": 200' in line for line in lines)


def test_api_keys_guard_predict_but_not_health(quick_bundle, tmp_path):
    clip = corpus_dir("cremad_av") / "1001_DFA_SAD_XX.flv"
    with running_server(quick_bundle, {"EMOTION_API_KEYS": "k-one, k-two"}) as srv:
        def post(headers):
            with open(clip, "rb") as fh:
                return httpx.post(srv.url + "/predict", files={"file": (clip.name, fh, "video/x-flv")},
                                  headers=headers, timeout=60)
        assert post({}).status_code == 401
        wrong = post({"X-API-Key": "k-three"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "unauthorized"
        assert post({"X-API-Key": "k-two"}).status_code == 200
        assert post({"Authorization": "Bearer k-one"}).status_code == 200
        assert httpx.get(srv.url + "/healthz").status_code == 200
        assert httpx.get(srv.url + "/readyz").status_code == 200
