"""The in-process decode floor: what decoding a clip costs with FFmpeg's libraries (PyAV) in this
process, no process start, no conversion, no model. It bounds any design that decodes every
frame the codec makes it decode: `bench/bench.py`'s floor is the `ffmpeg` CLI (a process start
included), this is the cost under it.

For each clip: the video stream alone (every frame, as the service's decoder options set it:
frame threads, and non-reference frames skipped where the service skips them), the audio stream
alone, and both in one demux pass; median ms over `--repeats` rounds of every file. With
`--peer-ms` (fer's time on the clip, from a `bench/bench.py` run) it prints the answer time the
"20x faster than fer" target asks for beside the decode alone.

    .venv/bin/python bench/decode_floor.py --clips cremad,720p-4s --peer-ms cremad=914,720p-4s=3932
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import av

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

import clips as clipmod  # noqa: E402
from service.pipeline import media  # noqa: E402
from service.pipeline.config import MediaLimits, PipelineConfig  # noqa: E402
from service.pipeline.extract import frame_sampling  # noqa: E402
from service.pipeline.streams import FrameSampling  # noqa: E402


def decode_ms(path: Path, video: bool, audio: bool, skip_nonref: bool) -> tuple[float, int]:
    """Wall ms to demux and decode the chosen streams of `path`; frames decoded."""
    start = time.perf_counter()
    with av.open(str(path)) as container:
        streams = []
        if video and container.streams.video:
            v = container.streams.video[0]
            v.codec_context.thread_type = "AUTO"
            if skip_nonref:
                v.codec_context.skip_frame = "NONREF"
            streams.append(v)
        if audio and container.streams.audio:
            streams.append(container.streams.audio[0])
        frames = 0
        for packet in container.demux(*streams):
            frames += sum(1 for _ in packet.decode())
    return (time.perf_counter() - start) * 1000.0, frames


def service_skips_nonref(path: Path, cfg: PipelineConfig) -> bool:
    """Whether the service leaves this file's non-reference frames undecoded: its own probe
    and frame sampling decide, as `media.Source.decode` does."""
    info = media.probe(path, MediaLimits())
    rate, cap = frame_sampling(info, cfg, None)
    return info.has_video and FrameSampling(rate, cap, cfg.frame_max_side).skips_nonref(info.fps)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", default="cremad,720p-4s", help="comma-separated names from bench/clips.py")
    ap.add_argument("--repeats", type=int, default=5, help="rounds over every file of a clip (default %(default)s)")
    ap.add_argument("--peer-ms", default="", help="NAME=MS,... fer's time per clip from a bench.py run")
    ap.add_argument("--cache", default=str(BENCH / ".clips"))
    ap.add_argument("--data", default=str(clipmod.DEFAULT_DATA))
    args = ap.parse_args(argv)
    peer = {k: float(v) for k, v in (p.split("=") for p in args.peer_ms.split(",") if p)}
    cfg = PipelineConfig()
    rows = []
    for clip in clipmod.prepare(args.clips.split(","), Path(args.cache), Path(args.data)):
        skip = service_skips_nonref(clip.files[0], cfg)
        parts = {"video": (True, False), "audio": (False, True), "both": (True, True)}
        times = {k: [] for k in parts}
        frames = {}
        for _ in range(args.repeats):
            for f in clip.files:
                for k, (v, a) in parts.items():
                    ms, n = decode_ms(f, v, a, skip)
                    times[k].append(ms)
                    frames.setdefault(k, n)
        med = {k: statistics.median(t) for k, t in times.items()}
        need = f"{peer[clip.name] / 20:.0f}" if clip.name in peer else "–"
        rows.append(f"| {clip.name} | {frames['video']}{' (non-ref skip on)' if skip else ''} | "
                    f"{med['video']:.1f} | {med['audio']:.1f} | {med['both']:.1f} | {need} |")
    print("| clip | video frames decoded | video ms | audio ms | both, one pass, ms | fer ÷ 20, ms |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
