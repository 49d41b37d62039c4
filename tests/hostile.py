"""A corpus of malformed and hostile uploads, generated on the fly (ffmpeg lavfi, bytes).

Each case names the status and error code the service must answer with (a 200 case
names the modalities it must report instead). The limits they probe are those of
`HOSTILE_LIMITS`, which the test server runs with.
"""
from __future__ import annotations

import random
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from media import make_video

# Settings of the server these cases run against (smaller than the defaults, so that the
# over-limit files stay small and quick to make).
HOSTILE_LIMITS = {
    "EMOTION_MAX_UPLOAD_MB": "4",
    "EMOTION_MAX_DURATION_S": "60",
    "EMOTION_MAX_WIDTH": "1920",
    "EMOTION_MAX_HEIGHT": "1920",
    "EMOTION_MAX_FRAMES": "1500",
}


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Path], Path]
    status: int
    code: str | None = None                      # expected error code (None for a 200)
    # Expected modalities of a 200. "video" for the face: frames were used, with or without
    # a face found (Haar sometimes sees one in a test pattern; that is not what these test).
    modalities: dict[str, str] | None = None


def _noise(n: int, seed: int) -> bytes:
    """Random bytes, the same on every run (so is the status they get)."""
    return random.Random(seed).randbytes(n)


def _bytes(data: bytes, suffix: str = ".mp4") -> Callable[[Path], Path]:
    def build(d: Path) -> Path:
        p = d / f"upload{suffix}"
        p.write_bytes(data)
        return p
    return build


def _ffmpeg(args: list[str], name: str) -> Callable[[Path], Path]:
    def build(d: Path) -> Path:
        out = d / name
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args, str(out)], check=True)
        return out
    return build


def _video(name: str, **kw) -> Callable[[Path], Path]:
    return lambda d: make_video(d / name, **kw)


def _cut(build: Callable[[Path], Path], keep: float | int) -> Callable[[Path], Path]:
    """The first `keep` bytes (int) or fraction (float) of another case's file."""
    def cut(d: Path) -> Path:
        src = build(d)
        data = src.read_bytes()
        n = keep if isinstance(keep, int) else int(len(data) * keep)
        out = d / f"cut-{src.name}"
        out.write_bytes(data[:n])
        return out
    return cut


def _corrupt_middle(build: Callable[[Path], Path]) -> Callable[[Path], Path]:
    """Overwrite the middle third of a valid file with random bytes."""
    def corrupt(d: Path) -> Path:
        src = build(d)
        data = bytearray(src.read_bytes())
        a, b = len(data) // 3, 2 * len(data) // 3
        data[a:b] = _noise(b - a, seed=3)
        out = d / f"corrupt-{src.name}"
        out.write_bytes(bytes(data))
        return out
    return corrupt


def _avi_with_gab2(d: Path) -> Path:
    """A real AVI with a GAB2 chunk carrying an HLS playlist that points at a local file, the
    signature of the ffmpeg SSRF / local-file-read trick (CVE-2017-9993 family). The chunk
    is not wired to a subtitle stream, so this exercises the byte scan that refuses it;
    the demuxer whitelist, which the nested demuxer inherits, is the second wall."""
    src = make_video(d / "base.avi", seconds=1, vcodec="mjpeg", acodec="pcm_s16le")
    playlist = b"#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:10.0,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n"
    payload = b"GAB2\x00\x02\x00" + struct.pack("<I", 10) + "sub.m3u8\x00".encode("utf-16-le") + b"\x04\x00" \
        + struct.pack("<I", len(playlist)) + playlist
    chunk = b"00tx" + struct.pack("<I", len(payload)) + payload
    data = src.read_bytes()
    movi = data.index(b"movi") + 4
    out = d / "gab2.avi"
    out.write_bytes(data[:movi] + chunk + data[movi:])
    return out


def _hls(target: str) -> bytes:
    return f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10.0,\n{target}\n#EXT-X-ENDLIST\n".encode()


def cases() -> list[Case]:
    mp4 = _video("ok.mp4", seconds=2)
    faststart = _video("fast.mp4", seconds=3, extra=["-movflags", "+faststart"])
    mkv = _video("ok.mkv", seconds=2)
    flv = _video("ok.flv", seconds=2, vcodec="flv1", acodec="libmp3lame")
    return [
        # --- not media at all
        Case("zero_bytes", _bytes(b""), 400, "empty_file"),
        Case("random_bytes", _bytes(_noise(8192, seed=1)), 400, "undecodable"),
        Case("nul_bytes", _bytes(b"\x00" * 8192), 400, "undecodable"),
        Case("text_renamed_mp4", _bytes(b"just some text, not a video\n" * 50), 400, "undecodable"),
        Case("json_renamed_mp4", _bytes(b'{"file": "video.mp4", "frames": [1, 2, 3]}'), 400, "undecodable"),
        Case("html_renamed_mp4", _bytes(b"<html><body><video src='x.mp4'></video></body></html>"), 400, "undecodable"),
        Case("ftyp_then_garbage", _bytes(b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + _noise(4096, seed=2)),
             400, "undecodable"),
        # --- truncated and header-only files
        Case("header_only_mp4", _cut(mp4, 32), 400, "undecodable"),
        Case("truncated_mp4_moov_at_end", _cut(mp4, 0.5), 400, "undecodable"),
        Case("truncated_mp4_faststart", _cut(faststart, 0.5), 200, modalities={"audio": "used", "face": "video"}),
        Case("header_only_mkv", _cut(mkv, 64), 400, "undecodable"),
        Case("truncated_mkv", _cut(mkv, 0.5), 200, modalities={"audio": "used", "face": "video"}),
        Case("header_only_flv", _cut(flv, 13), 400, "undecodable"),
        Case("truncated_flv", _cut(flv, 0.4), 200, modalities={"audio": "used", "face": "video"}),
        Case("corrupt_middle_mp4", _corrupt_middle(faststart), 200, modalities={"audio": "used", "face": "video"}),
        # --- files that point at other files
        Case("hls_playlist_local_segment", _bytes(_hls("segment.ts")), 415, "playlist_refused"),
        Case("hls_playlist_etc_passwd", _bytes(_hls("file:///etc/passwd")), 415, "playlist_refused"),
        Case("hls_playlist_http", _bytes(_hls("http://169.254.169.254/latest/meta-data")), 415, "playlist_refused"),
        Case("concat_playlist", _bytes(b"ffconcat version 1.0\nfile '/etc/passwd'\n"), 415, "playlist_refused"),
        Case("dash_manifest", _bytes(b'<?xml version="1.0"?><MPD xmlns="urn:mpeg:dash:schema:mpd:2011">'
                                     b'<BaseURL>file:///etc/</BaseURL></MPD>'), 415, "playlist_refused"),
        Case("avi_gab2_playlist", _avi_with_gab2, 415, "playlist_refused"),
        # --- containers and formats not accepted
        Case("wav_audio", _video("a.wav", video=False, acodec="pcm_s16le"), 200,
             modalities={"audio": "used", "face": "missing"}),
        Case("mp3_audio", _video("a.mp3", video=False, acodec="libmp3lame"), 200,
             modalities={"audio": "used", "face": "missing"}),
        Case("flac_audio", _video("a.flac", video=False, acodec="flac"), 200,
             modalities={"audio": "used", "face": "missing"}),
        Case("ogg_opus_audio", _video("a.ogg", video=False, acodec="libopus"), 200,
             modalities={"audio": "used", "face": "missing"}),
        Case("wav_too_long", _ffmpeg(["-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono", "-t", "75", "-c:a", "pcm_u8"],
                                     "long.wav"), 413, "too_long"),
        Case("aiff_audio", _video("a.aiff", video=False, acodec="pcm_s16be"), 415, "unsupported_container"),
        Case("png_image", _ffmpeg(["-f", "lavfi", "-i", "testsrc2=s=64x64", "-frames:v", "1"], "img.png"),
             415, "unsupported_container"),
        Case("gif_animation", _ffmpeg(["-f", "lavfi", "-i", "testsrc2=s=64x64:d=1"], "anim.gif"),
             415, "unsupported_container"),
        Case("mpeg_ts", _video("a.ts", seconds=1), 415, "unsupported_container"),
        # --- over the limits
        Case("huge_resolution", _ffmpeg(["-f", "lavfi", "-i", "color=c=black:s=4096x64:d=0.2", "-c:v", "libx264"],
                                        "wide.mp4"), 413, "resolution_too_large"),
        Case("too_long", _ffmpeg(["-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono", "-t", "75", "-c:a", "aac",
                                  "-b:a", "8k"], "long.mp4"), 413, "too_long"),
        Case("too_many_frames", _ffmpeg(["-f", "lavfi", "-i", "testsrc2=s=32x32:r=1000:d=2", "-c:v", "libx264",
                                         "-preset", "ultrafast"], "fast.mkv"), 413, "too_many_frames"),
        Case("zero_length_streams", _video("empty.mp4", seconds=2, extra=["-t", "0"]), 400, "no_usable_stream"),
        # --- valid but unusual: answered, with the missing part flagged
        Case("audio_only_m4a_in_mp4", _video("a.mp4", video=False), 200, modalities={"audio": "used", "face": "missing"}),
        # --- decodable, but neither a voice nor a face: nothing to recognise emotion from
        Case("video_only_no_face", _video("v.mp4", audio=False), 400, "no_usable_stream"),
        Case("silent_audio_no_face", _ffmpeg(["-f", "lavfi", "-i", "testsrc2=s=160x120:d=2", "-f", "lavfi", "-i",
                                              "anullsrc=r=16000:cl=mono", "-t", "2", "-c:v", "libx264", "-c:a", "aac"],
                                             "silent.mp4"), 400, "no_usable_stream"),
        Case("webm_vp9_opus", _video("v.webm", seconds=1, vcodec="libvpx-vp9", acodec="libopus",
                                     extra=["-deadline", "realtime"]), 200,
             modalities={"audio": "used", "face": "video"}),
        # written live (as a browser's MediaRecorder writes): no duration in the header
        Case("webm_live_no_duration", _video("live.webm", seconds=1, vcodec="libvpx-vp9", acodec="libopus",
                                             extra=["-deadline", "realtime", "-live", "1"]), 200,
             modalities={"audio": "used", "face": "video"}),
        Case("avi_mjpeg_pcm", _video("v.avi", seconds=1, vcodec="mjpeg", acodec="pcm_s16le"), 200,
             modalities={"audio": "used", "face": "video"}),
        Case("rotated_display_matrix", _video("rot.mp4", seconds=1, extra=["-metadata:s:v", "rotate=90"]), 200,
             modalities={"audio": "used", "face": "video"}),
    ]
