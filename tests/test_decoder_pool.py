"""The decoder worker pool: what a worker decodes is what the pipeline decodes in process, a
refused file keeps its worker, and a worker that dies, hangs or is left mid-pass is killed
and replaced: the request gets its documented error, the next one is served, and no process
is left behind."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from media import make_video

from service.pipeline import media
from service.pipeline.budget import Budget
from service.pipeline.config import MediaLimits
from service.pipeline.decoder_pool import DecoderPool

SAMPLING = media.FrameSampling(4.0, 48, 360)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_video(tmp_path_factory.mktemp("pool") / "a.mp4", seconds=3.0, size="640x360")


@pytest.fixture
def pool():
    pool = DecoderPool(2).start()
    try:
        yield pool
    finally:
        pool.close()


def _decode(pool: DecoderPool, path: Path, limits: MediaLimits = MediaLimits(), budget: Budget | None = None):
    with pool.open(path, limits, budget) as source:
        return source.info, list(source.decode(16000, SAMPLING))


def _replaced(pool: DecoderPool, gone: int, timeout: float = 30.0) -> list[int]:
    """The pool's workers once `gone` has been replaced (and reaped)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = pool.pids()
        if len(pids) == pool.size and gone not in pids and not os.path.exists(f"/proc/{gone}"):
            return pids
        time.sleep(0.05)
    pytest.fail(f"worker {gone} was not replaced: {pool.pids()}")


def test_a_worker_decodes_what_the_pipeline_decodes_in_process(pool, clip):
    info, events = _decode(pool, clip)
    with media.InProcess().open(clip, MediaLimits()) as source:
        assert source.info == info
        local = list(source.decode(16000, SAMPLING))
    assert [k for k, _ in events] == [k for k, _ in local] and len(events) > 12
    for (_, a), (_, b) in zip(events, local):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


def test_refused_and_undecodable_files_keep_their_worker(pool, clip, tmp_path):
    before = pool.pids()
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all\n" * 100)
    aiff = make_video(tmp_path / "a.aiff", video=False, acodec="pcm_s16be")
    playlist = tmp_path / "list.mp4"
    playlist.write_bytes(b"#EXTM3U\n#EXTINF:1,\nfile:///etc/passwd\n")
    for path, limits, code in [(junk, MediaLimits(), "undecodable"), (aiff, MediaLimits(), "unsupported_container"),
                               (playlist, MediaLimits(), "playlist_refused"),
                               (clip, MediaLimits(max_duration_s=1.0), "too_long"),
                               (clip, MediaLimits(max_width=320, max_height=320), "resolution_too_large")]:
        with pytest.raises(media.MediaError) as e:
            _decode(pool, path, limits)
        assert e.value.code == code
    with pool.open(clip, MediaLimits()):   # opened, closed unread
        pass
    assert pool.pids() == before
    assert _decode(pool, clip)[1]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSEGV])
def test_a_worker_killed_mid_request_is_decoder_failed_and_replaced(pool, clip, sig):
    with pool.open(clip, MediaLimits()) as source:
        pid = source.worker.pid
        os.kill(pid, sig)
        with pytest.raises(media.MediaError) as e:
            list(source.decode(16000, SAMPLING))
    assert (e.value.code, e.value.status) == ("decoder_failed", 500) and signal.Signals(sig).name in e.value.message
    _replaced(pool, pid)
    assert _decode(pool, clip)[1]


def test_a_hung_worker_is_a_decode_timeout_and_replaced(pool, clip):
    limits = MediaLimits(timeout_s=1.0)
    with pool.open(clip, limits) as source:
        pid = source.worker.pid
        os.kill(pid, signal.SIGSTOP)   # alive, and answering nothing
        start = time.monotonic()
        with pytest.raises(media.MediaError) as e:
            list(source.decode(16000, SAMPLING))
    assert (e.value.code, e.value.status) == ("decode_timeout", 504) and time.monotonic() - start < 5
    _replaced(pool, pid)
    assert _decode(pool, clip)[1]


def test_a_cancelled_request_and_a_reader_that_stops_early_replace_their_worker(pool, clip):
    budget = Budget()
    with pool.open(clip, MediaLimits(), budget) as source:
        pid = source.worker.pid
        budget.cancel()
        with pytest.raises(media.MediaError) as e:
            list(source.decode(16000, SAMPLING))
    assert e.value.code == "cancelled"
    _replaced(pool, pid)
    with pool.open(clip, MediaLimits()) as source:
        pid = source.worker.pid
        next(iter(source.decode(16000, SAMPLING)))   # one event, then the reader gives up
    _replaced(pool, pid)
    assert _decode(pool, clip)[1]


def test_close_stops_every_worker(clip):
    pool = DecoderPool(2).start()
    pids = pool.pids()
    assert len(pids) == 2 and _decode(pool, clip)[1]
    pool.close()
    assert pool.pids() == [] and not any(os.path.exists(f"/proc/{pid}") for pid in pids)
    with pytest.raises(media.MediaError) as e:
        _decode(pool, clip)
    assert e.value.code == "decoder_failed"
