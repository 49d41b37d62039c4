"""The live session's bookkeeping, in process on the shipped bundle: the rolling window's
bounds, the frame drop rules, the smoothing and the summary; and that a window's answer is
`predict_clip`'s on the same decoded media (the function POST /predict answers files with)."""
from __future__ import annotations

import time

import numpy as np
import pytest
from conftest import REPO_ROOT, corpus_dir

from service.live import protocol as p
from service.live.client import file_messages, jpeg
from service.live.session import EMA, LiveSession, SessionLimits
from service.pipeline.config import MediaLimits

SHIPPED = REPO_ROOT / "models" / "default"


@pytest.fixture(scope="module")
def bundle():
    if not (SHIPPED / "manifest.json").is_file():
        pytest.skip("the shipped bundle models/default is not there")
    from service.model.bundle import SERVING_ROLES, load_bundle
    return load_bundle(SHIPPED, ["CPUExecutionProvider"], roles=SERVING_ROLES)


def session(bundle, max_fps: float = 1000, max_pending: int = 16, **options) -> LiveSession:
    limits = SessionLimits(max_fps, max_pending, MediaLimits())
    return LiveSession(bundle, p.OpenOptions(type="open", **options), limits)


def media(message: bytes) -> p.Media:
    return p.parse_media(message)


def feed(s: LiveSession, messages, compute: bool = True) -> list[dict]:
    updates = []
    for _, m in messages:
        item = media(m)
        (s.add_audio if item.kind == p.AUDIO else s.add_frame)(item, time.monotonic())
        if s.due():
            window = s.take_window()
            if compute:
                updates.append(s.compute(window))
    return updates


def frame(t_ms: int, value: int = 128) -> bytes:
    return p.media_header(p.VIDEO, t_ms, 1) + jpeg(np.full((120, 160), value, np.uint8))


def silence(seconds: float) -> bytes:
    return p.media_header(p.AUDIO, 0) + bytes(int(seconds * p.SAMPLE_RATE) * 2)


def test_window_bounds_and_update_times(bundle):
    s = session(bundle, update_interval_s=0.5, window_s=2.0)
    for i in range(30):  # 3 s of audio in 100 ms chunks: 0.1 * 10 must reach 1.0 exactly
        s.add_audio(media(silence(0.1)), time.monotonic())
        if s.due():
            w = s.take_window()
            assert w.end_s == pytest.approx((i + 1) * 0.1)
            assert w.start_s == pytest.approx(max(0.0, w.end_s - 2.0))
            assert len(w.samples) == round((w.end_s - w.start_s) * p.SAMPLE_RATE)
    assert s.seq == 6 and s.updates_skipped == 0
    s.add_audio(media(silence(1.2)), time.monotonic())  # 3.0 -> 4.2: the update times 3.5 and 4.0 passed
    s.take_window()
    assert s.updates_skipped == 1 and s.next_update_s == pytest.approx(4.5)
    assert len(s.samples) <= (2.0 + 0.5) * p.SAMPLE_RATE, "audio kept: the window and one interval"


def test_frame_drop_rules(bundle):
    s = session(bundle, max_pending=3)
    s.add_audio(media(silence(1.0)), time.monotonic())
    now = time.monotonic()
    s.add_frame(media(frame(1000)), now)
    s.add_frame(media(frame(1100)), now)        # 0.1 s after the last: denser than frame_fps (4)
    s.add_frame(media(frame(4000)), now)        # 3 s ahead of the clock
    s.add_frame(media(frame(1250)), now)
    s.add_frame(media(frame(1500)), now)
    s.add_frame(media(frame(1750)), now)        # a fourth waiting frame: the oldest goes
    assert dict(s.dropped) == {"rate": 1, "bad_time": 1, "backlog": 1}
    assert [t for t, _, _ in s.pending] == [1.25, 1.5, 1.75]
    s.add_audio(media(silence(4.0)), time.monotonic())
    s.add_frame(media(frame(1900)), now)        # older than the window (clock 5.0, window 3 s)
    assert s.dropped["late"] == 1
    fast = session(bundle, max_fps=2)
    fast.add_audio(media(silence(2.0)), time.monotonic())
    for i in range(5):
        fast.add_frame(media(frame(300 * i)), now)
    assert fast.dropped["rate"] == 3, "2 frames per second of wall time"


def test_undecodable_frame_is_counted(bundle):
    s = session(bundle)
    s.add_audio(media(silence(0.5)), time.monotonic())
    s.add_frame(media(p.media_header(p.VIDEO, 100, 1) + b"\xff\xd8 not a jpeg"), time.monotonic())
    update = s.compute(s.take_window())
    assert update["dropped"]["undecodable"] == 1
    assert update["label"] is None and update["modalities"] == {"audio": "silent", "face": "missing"}


def test_window_answer_is_predict_clip_on_the_same_media(bundle):
    """The last window of a clip shorter than the window holds all its media: its answer is
    predict_clip's on the clip decoded from the same messages."""
    from service.model.predictor import predict_clip

    clip = corpus_dir("cremad_av") / "1001_DFA_ANG_XX.flv"
    s = session(bundle)
    feed(s, file_messages(clip, bundle.config.frame_fps, bundle.config.frame_max_side))
    final = s.take_window(final=True)
    last = s.compute(final)
    again = predict_clip(bundle, s.clip(final))  # the same window, no shared features
    assert last["window_probabilities"] == pytest.approx(again["probabilities"], abs=1e-6)
    assert last["face_found"] and last["audio_used"]
    summary = s.summary()
    assert summary["label"] == last["window_label"] and summary["summarised"] == 1


def test_smoothing():
    ema = EMA(1.0)
    a, b = {"x": 1.0, "y": 0.0}, {"x": 0.0, "y": 1.0}
    assert ema("f", a, 0.5) == a, "the first answer is taken as it is"
    mixed = ema("f", b, 0.5)
    assert mixed["y"] == pytest.approx(1 - np.exp(-0.5), abs=1e-5) and sum(mixed.values()) == pytest.approx(1)
    assert ema("f", None, 0.5) is None and ema.state["f"][1] == pytest.approx(mixed["y"], abs=1e-5)
    none = EMA(0.0)
    assert none("g", a, 0.5) == a and none("g", b, 0.5) == b, "smoothing_s 0: no smoothing"
