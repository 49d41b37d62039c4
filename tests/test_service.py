"""Integration: a real uvicorn serving a quick-profile bundle, answering real clips."""
from __future__ import annotations

import math
import subprocess
import time

import httpx
import pytest
from conftest import VOICED, corpus_dir
from media import make_video

from service.http.schemas import PredictResponse

pytestmark = pytest.mark.slow


def post(server, path, name="clip.mp4", content_type="video/mp4", route="/predict", **kw):
    with open(path, "rb") as fh:
        return httpx.post(server.url + route, files={"file": (name, fh, content_type)}, timeout=120, **kw)


def check_prediction(body: dict, classes: list[str]) -> None:
    typed = PredictResponse.model_validate(body)  # the documented model, and nothing beside it
    assert set(body) <= set(PredictResponse.model_fields)
    assert typed.model_dump(exclude_unset=True).keys() == body.keys()
    assert set(body["probabilities"]) == set(classes)
    assert math.isclose(sum(body["probabilities"].values()), 1.0, abs_tol=1e-6)
    assert all(0.0 <= p <= 1.0 for p in body["probabilities"].values())
    assert body["label"] == max(body["probabilities"], key=body["probabilities"].get)
    assert set(body["modalities"]) == {"audio", "face"}
    assert body["duration_s"] > 0
    times = [f["t"] for f in body["summary_frames"]]
    assert times == sorted(times) and all(0 <= t <= body["duration_s"] for t in times)
    assert {"probe", "decode", "face_detection", "audio_features", "classify"} <= set(body["timings_ms"])
    assert body["model"]["name"]


@pytest.fixture(scope="module")
def classes(server):
    return httpx.get(server.url + "/v1/models").json()["models"][0]["classes"]


def test_health_and_models(server):
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
    assert httpx.get(server.url + "/readyz").status_code == 200
    model = httpx.get(server.url + "/v1/models").json()["models"][0]
    assert {"audio_encoder", "frame_encoder", "image_features", "classifier"} <= set(model["artifacts"])
    served = {"audio_encoder", "frame_encoder", "image_features", "classifier"}
    assert all(a["providers"] for r, a in model["artifacts"].items() if r in served)


@pytest.mark.parametrize("emotion", ["ANG", "DIS", "FEA", "HAP", "NEU", "SAD"])
def test_real_cremad_clip(server, classes, emotion):
    clip = corpus_dir("cremad_av") / f"1001_DFA_{emotion}_XX.flv"
    r = post(server, clip, name=clip.name, content_type="video/x-flv")
    assert r.status_code == 200, r.text
    body = r.json()
    check_prediction(body, classes)
    assert body["modalities"]["face"] == "detected" and body["modalities"]["audio"] in VOICED
    assert len(body["summary_frames"]) == 8
    assert sum(f["face_detected"] for f in body["summary_frames"]) >= 7


def test_generated_h264_aac_mp4_on_v1_route(server, classes, tmp_path):
    clip = make_video(tmp_path / "gen.mp4", seconds=3, size="1280x720")
    r = post(server, clip, route="/v1/predict")
    assert r.status_code == 200, r.text
    body = r.json()
    check_prediction(body, classes)
    assert body["modalities"]["audio"] in VOICED
    assert body["modalities"]["face"] == "not_found"  # a test pattern has no face: flagged, not hidden


def test_timeline_on_request(server, classes, tmp_path):
    clip = make_video(tmp_path / "gen.mp4", seconds=5)
    r = post(server, clip, params={"timeline": "true", "segment_s": 2})
    assert r.status_code == 200, r.text
    segments = r.json()["timeline"]
    assert [(s["start_s"], s["end_s"]) for s in segments] == [(0, 2), (2, 4), (4, 5)]
    for s in segments:
        assert math.isclose(sum(s["probabilities"].values()), 1.0, abs_tol=1e-6)


def test_audio_only_and_video_only_files(server, tmp_path):
    no_video = post(server, make_video(tmp_path / "a.mp4", video=False))
    assert no_video.status_code == 200, no_video.text
    assert no_video.json()["modalities"]["face"] == "missing" and no_video.json()["modalities"]["audio"] in VOICED
    # A real face without its voice: answered from the face alone.
    face_only = tmp_path / "face.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(corpus_dir("cremad_av") / "1001_DFA_HAP_XX.flv"),
                    "-an", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(face_only)], check=True)
    no_audio = post(server, face_only)
    assert no_audio.status_code == 200, no_audio.text
    body = no_audio.json()
    assert body["modalities"] == {"audio": "missing", "face": "detected"}
    assert body["probabilities_by_modality"]["audio"] is None
    # A test pattern without sound has neither a voice nor a face: refused, not guessed.
    nothing = post(server, make_video(tmp_path / "v.mp4", audio=False))
    assert nothing.status_code == 400 and nothing.json()["error"]["code"] == "no_usable_stream", nothing.text


@pytest.mark.parametrize("payload,status", [
    (b"this is just text, not a video\n" * 20, 400),
    (b"\x00" * 4096, 400),
])
def test_bad_files_get_json_4xx(server, tmp_path, payload, status):
    path = tmp_path / "fake.mp4"
    path.write_bytes(payload)
    r = post(server, path)
    assert r.status_code == status
    err = r.json()["error"]
    assert err["code"] and err["message"]
    # no internal path (the spooled upload lives under server.tmp) and no trace
    assert str(server.tmp) not in r.text and "upload" not in err["message"] and "Traceback" not in r.text


def test_request_errors(server, tmp_path):
    wrong_field = httpx.post(server.url + "/predict", files={"video": ("a.mp4", b"abc", "video/mp4")})
    assert wrong_field.status_code == 422 and wrong_field.json()["error"]["code"] == "unexpected_fields"
    not_multipart = httpx.post(server.url + "/predict", content=b"raw", headers={"content-type": "video/mp4"})
    assert not_multipart.status_code == 415
    empty = httpx.post(server.url + "/predict", files={"file": ("a.mp4", b"", "video/mp4")})
    assert empty.status_code == 400
    bad_param = httpx.post(server.url + "/predict?segment_s=abc", files={"file": ("a.mp4", b"x", "video/mp4")})
    assert bad_param.status_code == 422


@pytest.fixture(scope="module")
def speech_files(tmp_path_factory) -> dict[str, object]:
    """One RAVDESS utterance as wav, flac, mp3 and ogg/opus (what users record with). A clip
    the shipped model is sure of (strong anger): lossy coding (mp3's encoder delay and
    low-pass) moves the features a little, which flips the label of clips near a tie."""
    src = corpus_dir("ravdess") / "Actor_01" / "03-01-05-02-02-02-01.flac"
    d = tmp_path_factory.mktemp("speech")
    out = {}
    for ext, codec in [("wav", "pcm_s16le"), ("flac", "flac"), ("mp3", "libmp3lame"), ("ogg", "libopus")]:
        out[ext] = d / f"speech.{ext}"
        lossy = ["-b:a", "192k"] if ext in ("mp3", "ogg") else []
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(src), "-c:a", codec, *lossy,
                        str(out[ext])], check=True)
    return out


def test_voice_recordings_are_answered_from_audio(server, speech_files):
    """Every format is answered from audio alone; the lossless ones exactly alike, opus with the
    same label. mp3 is held to less here: the test bundle (quick profile) trains its audio head
    without mp3 round trips, and LAME's 7.3 kHz low-pass moved such a head's label on 39 % of
    validation clips (bench/audio_eval.md); mp3 must still be answered from audio, near the
    wav's answer, with one of its two top labels. The shipped bundle, whose head trains on mp3
    round trips, is held to one label for all four (tests/test_shipped_model.py)."""
    probs = {}
    for ext, path in speech_files.items():
        r = post(server, path, name=path.name, content_type="application/octet-stream")
        assert r.status_code == 200, (ext, r.text)
        body = r.json()
        PredictResponse.model_validate(body)
        assert body["modalities"]["face"] == "missing" and body["modalities"]["audio"] in VOICED
        assert body["summary_frames"] == []
        probs[ext] = body["probabilities"]

    def label(ext):
        return max(probs[ext], key=probs[ext].get)

    def distance(a, b):  # total variation between two answers
        return sum(abs(probs[a][c] - probs[b][c]) for c in probs[a]) / 2

    assert distance("wav", "flac") < 1e-6, probs
    assert label("ogg") == label("wav") and distance("ogg", "wav") < 0.15, probs
    assert distance("mp3", "wav") < 0.5 and label("mp3") in sorted(probs["wav"], key=probs["wav"].get)[-2:], probs


def test_a_twenty_minute_wav_is_refused_by_the_duration_limit(server, tmp_path):
    wav = tmp_path / "long.wav"  # 20 min of 16 kHz mono 16-bit: 38 MB, under the upload limit
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono",
                    "-t", "1200", "-c:a", "pcm_s16le", str(wav)], check=True)
    rss = server.peak_rss_mb()
    start = time.monotonic()
    r = post(server, wav, name=wav.name, content_type="audio/wav")
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_long", r.text
    assert time.monotonic() - start < 10
    assert server.peak_rss_mb() < rss + 100  # refused by the probe gate before any decoding


def test_no_temp_files_left(server):
    assert list(server.tmp.iterdir()) == []
