"""Audio feature cost per second of audio on the service's path (target: <= 25 ms/s).

Times what `POST /predict` does with a decoded audio stream, per second of audio:
AudioAccumulator.feed in the service's 10 s blocks + finish, frame features, the speech
gate, the audio encoder (ONNX Runtime, 1 thread), window statistics at K step times and
the utterance statistics. Decoding (ffmpeg) is not included: it is the `decode_audio`
stage and does not depend on the features. No TensorFlow in this process.

    PYTHONPATH=. .venv/bin/python bench/audio_cost.py --encoder bench/results/audio_onnx/heldout0_audio_encoder.onnx

Without --encoder a random linear encoder stands in (numpy; the ONNX call is < 1 ms/s).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from service.pipeline import audio, audio_frames, fusion
from service.pipeline.config import PipelineConfig

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def speech(seconds: float) -> np.ndarray:
    """Real speech (RAVDESS actor 01 clips, concatenated) of about `seconds`."""
    import soundfile as sf
    clips = sorted((DATA / "ravdess" / "Actor_01").glob("*.flac"))
    parts, total = [], 0
    while total < seconds * 16000:
        for p in clips:
            x, _ = sf.read(str(p), dtype="float32")
            parts.append(x)
            total += len(x)
            if total >= seconds * 16000:
                break
    return np.concatenate(parts)[: int(seconds * 16000)]


def run(cfg: PipelineConfig, signal: np.ndarray, encode, repeats: int) -> dict:
    block = 10 * cfg.sample_rate
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        acc = audio.AudioAccumulator(cfg)
        for a in range(0, len(signal), block):
            acc.feed(signal[a:a + block])
        track = acc.finish()
        t1 = time.perf_counter()
        feats, ftimes = track.frame_features(cfg)
        active = track.speech_active(cfg)
        codes = np.concatenate([encode(feats[a:a + 6000]) for a in range(0, len(feats), 6000)])
        stats, _ = fusion.audio_window_stats(codes, ftimes, fusion.step_times(len(signal) / cfg.sample_rate, 8),
                                             cfg.audio_window_s, active)
        if cfg.utterance_dim:
            audio_frames.utterance_stats(codes, active, cfg.utterance_stats)
        t2 = time.perf_counter()
        times.append((t1 - t0, t2 - t1))
    secs = len(signal) / cfg.sample_rate
    acc_ms = sorted(t[0] for t in times)[len(times) // 2] * 1000 / secs
    rest_ms = sorted(t[1] for t in times)[len(times) // 2] * 1000 / secs
    return {"accumulate_ms_per_s": round(acc_ms, 2), "features_codes_stats_ms_per_s": round(rest_ms, 2),
            "total_ms_per_s": round(acc_ms + rest_ms, 2), "audio_s": secs, "repeats": repeats}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--encoder", type=Path, default=None)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "audio_cost.json")
    args = ap.parse_args()
    signal = speech(args.seconds)
    configs = {"mfcc13 (paper, today's bundle)": PipelineConfig(),
               "rich + gate + utterance stats": PipelineConfig(audio_features="rich", n_mels=64, speech_gate_db=35.0,
                                                               audio_code_dim=64,
                                                               audio_utterance_stats="mean,std,p10,p50,p90")}
    results = {}
    for name, cfg in configs.items():
        dim = audio.audio_dim(cfg)
        if args.encoder is not None and cfg.audio_features == "rich":
            import onnxruntime as ort
            so = ort.SessionOptions()
            so.intra_op_num_threads = 1
            so.inter_op_num_threads = 1
            sess = ort.InferenceSession(str(args.encoder), so, providers=["CPUExecutionProvider"])
            iname, oname = sess.get_inputs()[0].name, sess.get_outputs()[0].name
            encode = lambda x, s=sess, i=iname, o=oname: s.run([o], {i: x})[0]  # noqa: E731
        else:
            w = np.random.default_rng(0).standard_normal((dim, cfg.audio_code_dim)).astype(np.float32)
            encode = lambda x, w=w: np.tanh(x @ w)  # noqa: E731
        run(cfg, signal[: 16000 * 5], encode, 1)  # warm-up
        results[name] = run(cfg, signal, encode, args.repeats)
        print(f"| {name} | {results[name]['accumulate_ms_per_s']} | {results[name]['features_codes_stats_ms_per_s']} "
              f"| {results[name]['total_ms_per_s']} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
