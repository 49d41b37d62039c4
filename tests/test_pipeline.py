"""The shared feature pipeline, stage by stage, on generated media and real clips."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import DATA_DIR, corpus_dir, turned_face_clip
from media import make_video, need_ffmpeg

from service.pipeline import audio, fusion, media, visual
from service.pipeline.config import MediaLimits, PipelineConfig
from service.pipeline.extract import audio_mfcc, decode_clip

CFG = PipelineConfig()


def test_probe_reads_streams_and_display_size(tmp_path):
    info = media.probe(make_video(tmp_path / "a.mp4", size="640x360"), MediaLimits())
    assert info.has_audio and info.has_video
    assert (info.width, info.height) == (640, 360)
    assert info.duration_s == pytest.approx(2.0, abs=0.1)
    assert info.format_name == "mov,mp4,m4a,3gp,3g2,mj2"


def test_probe_refuses_out_of_bounds(tmp_path):
    clip = make_video(tmp_path / "a.mp4", size="640x360", seconds=3)
    with pytest.raises(media.MediaError) as e:
        media.probe(clip, MediaLimits(max_width=320))
    assert e.value.status == 413 and e.value.code == "resolution_too_large"
    with pytest.raises(media.MediaError) as e:
        media.probe(clip, MediaLimits(max_duration_s=1.0))
    assert e.value.status == 413 and e.value.code == "too_long"


def test_probe_refuses_text_and_foreign_containers(tmp_path):
    need_ffmpeg()
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    with pytest.raises(media.MediaError) as e:
        media.probe(text, MediaLimits())
    assert e.value.status == 400
    aiff = make_video(tmp_path / "tone.aiff", video=False, acodec="pcm_s16be")
    with pytest.raises(media.MediaError) as e:
        media.probe(aiff, MediaLimits())
    assert e.value.status == 415


@pytest.mark.parametrize("name,acodec", [("a.wav", "pcm_s16le"), ("a.flac", "flac"), ("a.mp3", "libmp3lame"),
                                         ("a.ogg", "libopus"), ("a.m4a", "aac")])
def test_probe_accepts_audio_files(tmp_path, name, acodec):
    info = media.probe(make_video(tmp_path / name, video=False, acodec=acodec), MediaLimits())
    assert info.has_audio and not info.has_video and info.duration_s == pytest.approx(2.0, abs=0.1)


def _cli_skip(path: Path, sampling: media.FrameSampling) -> list[str]:
    """The CLI's input option for the frames the service leaves undecoded (`skips_nonref`)."""
    with media.open_media(path, MediaLimits()) as source:
        return ["-skip_frame", "noref"] if sampling.skips_nonref(source.info.fps) else []


def _cli_decode(path: Path, sampling: media.FrameSampling) -> tuple[np.ndarray, list[np.ndarray]]:
    """What the ffmpeg CLI gives for the same conversion (the decoder the service used before):
    audio as `-ac 1 -ar 16000 -f f32le`, frames through the same filters after its autorotate."""
    import subprocess

    base = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path)]
    sound = subprocess.run([*base, "-map", "0:a:0", "-ac", "1", "-ar", "16000", "-f", "f32le", "-"],
                           capture_output=True, check=True).stdout
    chain = ",".join(f"{name}={args}" for name, args in sampling.filters())
    images = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", *_cli_skip(path, sampling), "-i", str(path),
                             "-map", "0:v:0", "-an", "-vf", chain, "-frames:v", str(sampling.max_frames),
                             "-c:v", "pam", "-f", "image2pipe", "-"], capture_output=True, check=True).stdout
    frames = []
    while images:
        end = images.index(b"ENDHDR\n") + 7
        fields = dict(line.split(b" ", 1) for line in images[:end].split(b"\n") if b" " in line)
        w, h = int(fields[b"WIDTH"]), int(fields[b"HEIGHT"])
        frames.append(np.frombuffer(images[end:end + w * h], np.uint8).reshape(h, w))
        images = images[end + w * h:]
    return np.frombuffer(sound, "<f4"), frames


def _one_pass(path: Path, sampling: media.FrameSampling) -> tuple[np.ndarray, list[np.ndarray]]:
    with media.open_media(path, MediaLimits()) as source:
        events = list(source.decode(16000, sampling))
    return (np.concatenate([d for k, d in events if k == "audio"]), [d for k, d in events if k == "frame"])


@pytest.mark.parametrize("source", ["mp4", "webm", "cremad"])
def test_one_pass_decodes_as_the_ffmpeg_cli_does(tmp_path, source):
    """The same samples (AAC/Opus decoders of two FFmpeg versions: within 1e-7) and the same
    frames; scaled frames within one grey level (swscale's area filter rounds a few pixels
    differently from Debian's FFmpeg 5.1, fewer than the 5.1 CLI differs from itself without SIMD)."""
    if source == "cremad":
        clip = sorted(corpus_dir("cremad_av").glob("*.flv"))[0]
    elif source == "webm":
        clip = make_video(tmp_path / "a.webm", seconds=3.0, size="640x360", vcodec="libvpx-vp9", acodec="libopus",
                          extra=["-deadline", "realtime"])
    else:
        clip = make_video(tmp_path / "a.mp4", seconds=3.0, size="640x360")
    sampling = media.FrameSampling(8.0, 48, 360)
    samples, frames = _one_pass(clip, sampling)
    cli_samples, cli_frames = _cli_decode(clip, sampling)
    assert len(samples) == len(cli_samples) > 16000
    np.testing.assert_allclose(samples, cli_samples, atol=1e-6, rtol=0)
    assert len(frames) == len(cli_frames) >= 16
    if source == "webm":
        # Debian's FFmpeg 5.1 starts this file at Opus's codec delay (-7 ms) and so times every
        # frame 7 ms later; FFmpeg 8.1 starts it at 0. Ticks of the fps filter that fall between
        # two frames then take the other one: the same number of frames, not always the same.
        return
    for a, b in zip(frames, cli_frames):
        assert a.shape == b.shape and np.abs(a.astype(int) - b).max() <= 1
        assert np.mean(a != b) < 0.02
    unscaled = media.FrameSampling(8.0, 48, 640)  # no scaling: the same bytes
    for a, b in zip(_one_pass(clip, unscaled)[1], _cli_decode(clip, unscaled)[1]):
        np.testing.assert_array_equal(a, b)


def test_a_display_rotation_turns_the_frames_as_the_ffmpeg_cli_does(tmp_path):
    import av

    path = tmp_path / "turned.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        stream.set_display_rotation(90)
        for i in range(25):
            image = np.zeros((240, 320, 3), np.uint8)
            image[:120, : 160 + 4 * i] = 255   # a corner that tells which way the frame is turned
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    sampling = media.FrameSampling(4.0, 8, 640)
    with media.open_media(path, MediaLimits()) as source:
        frames = [d for _, d in source.decode(None, sampling)]
    cli = _cli_decode_frames_only(path, sampling)
    assert frames[0].shape == (320, 240) and len(frames) == len(cli)
    for a, b in zip(frames, cli):
        np.testing.assert_array_equal(a, b)


def _cli_decode_frames_only(path: Path, sampling: media.FrameSampling) -> list[np.ndarray]:
    import subprocess

    chain = ",".join(f"{name}={args}" for name, args in sampling.filters())
    raw = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", *_cli_skip(path, sampling), "-i", str(path), "-vf", chain, "-frames:v",
                          str(sampling.max_frames), "-f", "rawvideo", "-"], capture_output=True, check=True).stdout
    return list(np.frombuffer(raw, np.uint8).reshape(-1, 320, 240))


def test_audio_is_16k_mono_and_frames_are_bounded(tmp_path, detector):
    clip = make_video(tmp_path / "a.mp4", seconds=4.0, size="1280x720")
    info = media.probe(clip, MediaLimits())
    signal = media.decode_audio(clip, CFG.sample_rate, 10.0)
    assert signal.dtype == np.float32 and len(signal) == pytest.approx(4.0 * CFG.sample_rate, rel=0.02)
    frames = list(media.stream_frames(clip, CFG.frame_fps, 100, CFG.frame_max_side, 10.0))
    assert len(frames) == pytest.approx(4.0 * CFG.frame_fps, abs=1)
    assert max(frames[0][1].shape) == CFG.frame_max_side
    decoded = decode_clip(clip, CFG, MediaLimits(), detector=detector)
    assert decoded.audio.n_samples == len(signal)
    assert len(decoded.audio.mel) == len(signal) // CFG.hop_length + 1
    # a test pattern: every frame sampled, none with a face, so no crop at all (no centre guess)
    assert decoded.faces.frames == len(frames) and len(decoded.faces) == 0
    assert decoded.faces.without_face == len(frames)


def test_long_clip_sampling_respects_max_frames(tmp_path, detector):
    cfg = PipelineConfig(max_frames=10)
    clip = make_video(tmp_path / "a.mp4", seconds=8.0)
    decoded = decode_clip(clip, cfg, MediaLimits(), detector=detector)
    assert 8 <= decoded.faces.frames <= 10
    assert decoded.faces.frame_times[-1] <= 8.0
    # a timeline asks for k_summary frames per segment, more than max_frames in all
    dense = decode_clip(clip, cfg, MediaLimits(), segment_s=2.0, detector=detector)
    assert dense.faces.frames == pytest.approx(8.0 * cfg.k_summary / 2.0, abs=1)
    assert dense.faces.slice(2.0, 4.0).frames == pytest.approx(cfg.k_summary, abs=1)


def test_a_timeline_of_a_long_clip_is_sampled_from_the_same_open_file(tmp_path, detector):
    """The sampling is chosen from the probe (here: a function of it) and decoded from the file
    it came from: audio, frames and their times are those of a plain decode at that sampling."""
    cfg = PipelineConfig(max_frames=10)
    clip = make_video(tmp_path / "a.mp4", seconds=8.0)
    seen = []
    chosen = decode_clip(clip, cfg, MediaLimits(), detector=detector, segment_s=lambda info: seen.append(info) or 2.0)
    fixed = decode_clip(clip, cfg, MediaLimits(), detector=detector, segment_s=2.0)
    assert seen == [chosen.info] and chosen.info.duration_s == pytest.approx(8.0, abs=0.1)
    np.testing.assert_array_equal(chosen.faces.frame_times, fixed.faces.frame_times)
    np.testing.assert_array_equal(chosen.audio.mel, fixed.audio.mel)


def test_a_video_needs_a_face_detector(tmp_path):
    with pytest.raises(ValueError, match="face detector"):
        decode_clip(make_video(tmp_path / "a.mp4", seconds=1.0), CFG, MediaLimits())


def test_streamed_mfcc_equals_librosa_on_the_whole_signal():
    import librosa

    signal = media.decode_audio(_ravdess_clip(), CFG.sample_rate, 30.0, formats=None)
    y = signal / np.max(np.abs(signal))
    reference = librosa.feature.mfcc(y=y, sr=CFG.sample_rate, n_mfcc=CFG.n_mfcc, n_fft=CFG.n_fft,
                                     win_length=CFG.win_length, hop_length=CFG.hop_length, n_mels=CFG.n_mels).T
    whole, _ = audio_mfcc(signal, CFG)
    np.testing.assert_allclose(whole, reference, atol=1e-3, rtol=1e-5)
    acc = audio.AudioAccumulator(CFG)
    for a in range(0, len(signal), 7777):  # block boundaries anywhere
        acc.feed(signal[a:a + 7777])
    blocks, _ = acc.finish().mfcc(CFG)
    # Equal up to float32 rounding: BLAS blocks the mel matrix product differently for other
    # chunk sizes (seen here: 2e-6 relative on an AMD EPYC; exactly equal on other CPUs).
    np.testing.assert_allclose(blocks, whole, rtol=1e-5, atol=1e-4)


def test_audio_track_slice_is_normalised_by_its_own_peak():
    t = np.arange(4 * CFG.sample_rate, dtype=np.float32) / CFG.sample_rate
    noise = np.random.default_rng(0).normal(size=t.size).astype(np.float32)
    quiet_then_loud = noise * np.where(t < 2.0, 0.02, 0.3).astype(np.float32)
    track = audio.track_of(quiet_then_loud, CFG)
    first = track.slice(0.0, 2.0, CFG)
    alone, times = audio_mfcc(quiet_then_loud[: 2 * CFG.sample_rate], CFG)
    sliced, sliced_times = first.mfcc(CFG)
    assert len(sliced) == len(alone) - 1  # the lone clip has one more (end-padded) frame
    np.testing.assert_allclose(sliced[5:-5], alone[5:-6], atol=1e-3, rtol=1e-4)  # edges see other padding
    np.testing.assert_allclose(sliced_times, times[:-1])
    later, later_times = track.slice(2.0, 4.0, CFG).mfcc(CFG)
    assert later_times[0] == pytest.approx(0.0)


def test_mfcc_shape_and_silence():
    t = np.arange(CFG.sample_rate, dtype=np.float32) / CFG.sample_rate
    mfcc, times = audio_mfcc(0.3 * np.sin(2 * np.pi * 440 * t), CFG)
    assert mfcc.shape == (CFG.sample_rate // CFG.hop_length + 1, CFG.n_mfcc)
    assert times[1] - times[0] == pytest.approx(CFG.hop_length / CFG.sample_rate)
    silent, _ = audio_mfcc(np.zeros(CFG.sample_rate, np.float32), CFG)
    assert len(silent) == 0
    # peak normalisation: the MFCCs do not depend on the recording level
    loud, _ = audio_mfcc(0.9 * np.sin(2 * np.pi * 440 * t), CFG)
    np.testing.assert_allclose(mfcc, loud, atol=1e-3)


def test_face_found_in_every_frame_of_a_real_clip_and_none_in_a_blank_one(detector):
    clip = sorted(corpus_dir("cremad_av").glob("*.flv"))[0]
    faces = decode_clip(clip, CFG, MediaLimits(), detector=detector).faces
    assert faces.frames >= 8 and len(faces) == faces.frames and not faces.flagged and not faces.low_quality
    assert all(c.detected and c.reason == "" for c in faces.crops)
    assert faces.crops[0].image.shape == (CFG.image_size, CFG.image_size)
    assert visual.detect_face(np.full((240, 320), 128, np.uint8), detector, CFG) is None


def test_a_clip_whose_only_face_is_turned_is_answered_from_it_and_says_so(tmp_path, detector):
    """Every frame shows the same turned face: rather than "no face", the flagged crops are the
    track, marked low quality; nothing stays counted as flagged. A frame with a usable face is
    always preferred (the CREMA-D test above: no fallback when the gate passes)."""
    faces = decode_clip(turned_face_clip(tmp_path), CFG, MediaLimits(), detector=detector).faces
    assert faces.low_quality and faces.frames >= 8 and len(faces) == faces.frames
    assert all(c.detected and c.reason == visual.TURNED for c in faces.crops) and not faces.flagged
    assert faces.without_face == 0


def test_a_pattern_that_looks_like_a_face_in_one_frame_is_no_face(tmp_path, detector):
    """testsrc2's moving shapes make the detector fire at 0.5-0.6 in one sampled frame of 8
    (usable or turned, depending on which frames are sampled): not steady enough to be a face."""
    clip = make_video(tmp_path / "pattern.mp4", seconds=2, size="160x120", audio=False)
    faces = decode_clip(clip, CFG, MediaLimits(), detector=detector).faces
    assert len(faces) == 0 and not faces.low_quality and faces.frames == 8


@pytest.mark.parametrize("pattern", ["testsrc=s=640x480", "smptebars=s=640x480", "mandelbrot=s=640x480",
                                     "life=s=640x480:mold=10:ratio=0.5"])
def test_faceless_patterns_show_no_face(tmp_path, detector, pattern):
    """No face in ffmpeg's test patterns, with every retry pass on: mandelbrot's zoom shows a
    middling "turned face" in 3 of 16 frames, which must not stand in for a face."""
    import subprocess
    clip = tmp_path / "pattern.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", pattern, "-t", "4", "-pix_fmt", "yuv420p",
                    "-c:v", "libx264", str(clip)], check=True)
    faces = decode_clip(clip, CFG, MediaLimits(), detector=detector).faces
    assert len(faces) == 0 and faces.frames >= 8


@pytest.mark.parametrize("still, how", [("rafdb/train/sad/train_00262_aligned.jpg", "mirror"),
                                        ("fer2013/public_test/surprise/PublicTest_52359086.jpg", "equalised")])
def test_faces_the_whole_frame_misses_are_found_by_a_retry_pass(tmp_path, detector, still, how):
    """Real faces the detector misses on the frame as it is: one it finds in the mirror image
    (keypoints mapped back: the subject's right eye stays on the image's left) and a
    low-contrast one it finds after histogram equalisation."""
    from trainer.fusion.served_clips import Item, make_face
    path = DATA_DIR / still
    if not path.exists():
        pytest.skip(f"{path} is not in the shared data")
    with media.open_media(make_face(Item(path, "x"), tmp_path), MediaLimits()) as source:
        frames = [d for _, d in source.decode(None, media.FrameSampling(4.0, 4, CFG.frame_max_side))]
    assert not detector.detect(frames[0], CFG.face_score_threshold, CFG.face_nms_iou)
    faces = visual.find_faces(frames[0], detector, CFG)
    assert faces, f"the {how} pass found no face"
    right_eye, left_eye = faces[0].keypoints[0], faces[0].keypoints[1]
    assert right_eye[0] < left_eye[0] and abs(visual.pose(faces[0]).roll_deg) < 30


def test_summary_selection_picks_one_frame_per_cluster_in_time_order():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 8)) * 10
    # 40 frames in 4 scenes of 10 consecutive frames each
    latents = np.concatenate([c + rng.normal(scale=0.1, size=(10, 8)) for c in centres])
    chosen = visual.select_summary(latents, k=4, seed=0)
    assert list(chosen) == sorted(chosen)
    assert sorted(i // 10 for i in chosen) == [0, 1, 2, 3]


def test_summary_selection_repeats_when_too_few_frames():
    chosen = visual.select_summary(np.eye(3, dtype=np.float32), k=8, seed=0)
    assert len(chosen) == 8 and set(chosen) == {0, 1, 2} and list(chosen) == sorted(chosen)


def test_fusion_flags_mark_missing_modalities():
    k = CFG.k_summary
    codes = np.ones((100, CFG.audio_code_dim), np.float32)
    times = np.arange(100) * 0.01
    stats, present = fusion.audio_window_stats(codes, times, fusion.step_times(1.0, k), CFG.audio_window_s)
    assert present.all() and np.allclose(stats[:, :CFG.audio_code_dim], 1) and np.allclose(stats[:, CFG.audio_code_dim:], 0)
    no_video = fusion.build_sequence(CFG, None, np.zeros(k, bool), stats, present)
    a, b = CFG.layout()["flags"]
    assert no_video.shape == (k, CFG.step_dim)
    assert (no_video[:, a:b] == [1, 0, 0]).all()
    assert not no_video[:, : CFG.image_feature_dim].any()
    feats = np.full((k, CFG.image_feature_dim), 0.5, np.float32)
    no_audio = fusion.build_sequence(CFG, feats, np.ones(k, bool), np.zeros_like(stats), np.zeros(k, bool))
    assert (no_audio[:, a:b] == [0, 1, 1]).all()


def test_config_round_trip_refuses_unknown_parameters():
    assert PipelineConfig.from_dict(CFG.to_dict()) == CFG
    with pytest.raises(ValueError, match="unknown preprocessing"):
        PipelineConfig.from_dict({**CFG.to_dict(), "new_param": 1})


def _ravdess_clip() -> Path:
    return sorted(corpus_dir("ravdess").glob("Actor_*/*"))[0]
