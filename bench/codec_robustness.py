"""How much lossy coding moves the audio head's answer (the goal: a voice recording as wav,
flac, mp3 or ogg must get the same label).

Each RAVDESS clip of the validation actors (15-16: never trained on, not the test actors) is
coded as mp3 (LAME 192k and 64k), ogg/opus 192k and AAC 128k in .m4a, decoded as the service
decodes an upload, and scored by an audio head ONNX file on the pipeline's utterance statistics.
Prints, per format: accuracy, how often the label equals the original file's, and the mean
total variation from the original's probabilities.

    .venv/bin/python bench/codec_robustness.py --head models/default/audio_head.onnx
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from service.model.bundle import open_session, read_manifest  # noqa: E402
from service.pipeline.config import PipelineConfig  # noqa: E402
from trainer.cache import FeatureCache  # noqa: E402
from trainer.data import BASIC7, load_ravdess  # noqa: E402
from trainer.data.splits import RAVDESS_VAL  # noqa: E402
from trainer.voice.features import frame_features, frames_utterance  # noqa: E402

FORMATS = {  # name: (suffix, ffmpeg arguments)
    "mp3 192k": (".mp3", ["-c:a", "libmp3lame", "-b:a", "192k"]),
    "mp3 64k": (".mp3", ["-c:a", "libmp3lame", "-b:a", "64k"]),
    "ogg/opus 192k": (".ogg", ["-c:a", "libopus", "-b:a", "192k"]),
    "m4a/aac 128k": (".m4a", ["-c:a", "aac", "-b:a", "128k", "-ar", "48000"]),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--head", type=Path, default=REPO / "models" / "default" / "audio_head.onnx")
    ap.add_argument("--bundle", type=Path, default=REPO / "models" / "default", help="for the preprocessing")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    args = ap.parse_args(argv)
    cfg = PipelineConfig.from_dict(read_manifest(args.bundle).preprocessing)
    head = open_session(args.head, "audio_head")
    clips = [s for s in load_ravdess(args.data / "ravdess") if s.speaker.split(":", 1)[1] in RAVDESS_VAL]
    y = np.array([BASIC7.index(s.label) for s in clips])
    probs: dict[str, list[np.ndarray]] = {"original (flac)": [], **{f: [] for f in FORMATS}}
    nocache = FeatureCache(None)
    with tempfile.TemporaryDirectory() as tmp:
        for s in clips:
            for name in probs:
                path = s.path
                if name in FORMATS:
                    suffix, codec = FORMATS[name]
                    path = Path(tmp) / f"coded{suffix}"
                    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(s.path), *codec, str(path)],
                                   check=True)
                f = frame_features(replace(s, path=path), cfg, nocache)
                u = frames_utterance(f, cfg)
                probs[name].append(head.run(u[None].astype(np.float32))[0])
    ref = np.stack(probs["original (flac)"])
    print(f"{len(clips)} clips of RAVDESS actors {', '.join(sorted(RAVDESS_VAL))}; head {args.head}\n")
    print("| format | accuracy | same label as the original | mean total variation |\n|---|---|---|---|")
    for name, rows in probs.items():
        p = np.stack(rows)
        print(f"| {name} | {(p.argmax(1) == y).mean():.3f} | {(p.argmax(1) == ref.argmax(1)).mean():.3f} | "
              f"{np.abs(p - ref).sum(1).mean() / 2:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
