"""CPU time of the voice's speech encoder per second of audio (target: <= 15 ms/s), one core.

Times what `POST /predict` adds for the voice's pretrained representation, on real speech
(RAVDESS actor 01 clips, concatenated) of several lengths: Whisper's log-mel from the
accumulator's frames, the bundle's `voice_encoder` graph (ONNX Runtime, 1 intra-op thread) on
windows of at most 30 s, and the pooling. CPU seconds of this process (time.process_time),
median over repeats, divided by the audio's length; wall time beside it. The accumulator's own
cost (shared with the hand features) is `bench/audio_cost.py`'s.

    .venv/bin/python bench/voice_cost.py [--bundle models/default] [--extra path/to/other_encoder.onnx ...]

`--extra` times other exports of the same encoder beside it (e.g. every layer, for the depth's cost).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from audio_cost import speech  # noqa: E402  (bench/ is on sys.path: this script's folder)
from service.model.bundle import load_bundle, open_session  # noqa: E402
from service.model.manifest import Manifest  # noqa: E402
from service.pipeline import audio, voice  # noqa: E402
from service.pipeline.config import PipelineConfig  # noqa: E402


def timed(fn, repeats: int) -> tuple[float, float]:
    """Median CPU and wall seconds of `fn()` over `repeats` runs (after one warm-up)."""
    fn()
    cpu, wall = [], []
    for _ in range(repeats):
        c, w = time.process_time(), time.perf_counter()
        fn()
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
    return float(np.median(cpu)), float(np.median(wall))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, default=Path("models/default"))
    ap.add_argument("--extra", type=Path, nargs="*", default=[], help="other encoder exports to time beside it")
    ap.add_argument("--encoder", type=Path, help="time this export (with --layers) instead of a bundle's")
    ap.add_argument("--layers", default="3", help="the hidden states --encoder returns")
    ap.add_argument("--seconds", default="2,4,10,30,60")
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    if args.encoder:
        # The front end of --bundle (its audio preprocessing), with this export's layers.
        cfg = replace(PipelineConfig.from_dict(Manifest.read(args.bundle)[0].preprocessing),
                      voice_encoder="whisper-tiny.en", voice_layers=args.layers)
        run = open_session(args.encoder, "voice_encoder", ["CPUExecutionProvider"], threads=1).run
        encoders = {f"{args.encoder.name} (layers {cfg.voice_layers})": (run, cfg)}
    else:
        bundle = load_bundle(args.bundle, ["CPUExecutionProvider"], threads=1, roles=("voice_encoder",))
        cfg = bundle.config
        if not cfg.voice_encoder:
            raise SystemExit(f"{args.bundle} has no speech encoder")
        encoders = {f"bundle (layers {cfg.voice_layers})": (bundle.encode_voice, cfg)}
    for path in args.extra:
        sess = open_session(path, "voice_encoder", ["CPUExecutionProvider"], threads=1)
        width = sess.session.get_outputs()[0].shape[-1]
        layers = ",".join(str(i) for i in range(width // cfg.voice_dim))
        encoders[path.name] = (sess.run, replace(cfg, voice_layers=layers))
    print(f"load average {os.getloadavg()[0]:.2f}; 1 ONNX Runtime thread; median of {args.repeats}\n")
    print("| encoder | audio s | log-mel ms/s | encoder + pooling CPU ms/s | wall ms/s |")
    print("|---|---|---|---|---|")
    for seconds in [float(s) for s in args.seconds.split(",")]:
        y = speech(seconds)
        for name, (encode, c) in encoders.items():
            track = audio.track_of(y, c)
            mel_cpu, _ = timed(lambda: voice.log_mel(track, c), args.repeats)
            cpu, wall = timed(lambda: voice.embedding(track, c, encode), args.repeats)
            print(f"| {name} | {seconds:g} | {1000 * mel_cpu / seconds:.2f} | {1000 * cpu / seconds:.1f} | "
                  f"{1000 * wall / seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
