"""Face backbone cost per face in ONNX Runtime, side by side (target: no higher than the
ResNet-50 at 48 px that the bundle shipped before the face ResNet).

Every backbone gets one CPU session with 1 intra-op thread (the service's setting per
request); rounds alternate between the backbones so that the machine's load falls on all of
them alike. Per batch size: the median over rounds of the wall time per face.

    .venv/bin/python bench/face_cost.py                       # the shipped backbone vs ResNet-50 at 48 px
    .venv/bin/python bench/face_cost.py --model OTHER.onnx     # and any other exported backbone

The ResNet-50 is keras.applications' layout as `--backbone resnet50` builds it (random
weights: the cost does not depend on them), exported once with the trainer's own exporter
to bench/results/ (needs the `train` extra).
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from trainer.export import ort_ms_per_item

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def resnet50_onnx(image_size: int) -> Path:
    """keras' ResNet-50 feature extractor at `image_size` px as ONNX (built once, cached)."""
    out = RESULTS / f"resnet50_{image_size}px.onnx"
    if not out.exists():
        from trainer.export import export_onnx
        from trainer.models.resnet import build_resnet50

        _, backbone = build_resnet50(image_size, 7)
        sample = np.random.default_rng(0).normal(size=(2, image_size, image_size, 3)).astype(np.float32)
        export_onnx(backbone, out, sample_inputs=sample, input_name="face", output_name="features")
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", type=Path, default=REPO / "models" / "default")
    ap.add_argument("--model", type=Path, action="append", default=[], help="another backbone (ONNX) to time")
    ap.add_argument("--resnet50-size", type=int, default=48, help="ResNet-50 input size, px (0: leave it out)")
    ap.add_argument("--rounds", type=int, default=40)
    args = ap.parse_args(argv)

    models = {"shipped (" + args.bundle.name + ")": args.bundle / "image_features.onnx"}
    if args.resnet50_size:
        models[f"ResNet-50 at {args.resnet50_size} px"] = resnet50_onnx(args.resnet50_size)
    models.update({p.name: p for p in args.model})
    load = os.getloadavg()[0]
    result = ort_ms_per_item(models, (1, 8), args.rounds)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "face_cost.json").write_text(json.dumps({"load_average": load, "rounds": args.rounds,
                                                       "ms_per_face": result}, indent=1))
    ref = next(iter(result.values()))
    print(f"Load average at start {load:.2f}; 1 thread; median of {args.rounds} interleaved rounds.\n")
    print("| backbone | ms/face, batch 1 | ms/face, batch 8 | vs shipped (batch 1 / 8) |\n|---|---|---|---|")
    for name, r in result.items():
        print(f"| {name} | {r['batch_1']:.2f} | {r['batch_8']:.2f} | "
              f"{r['batch_1'] / ref['batch_1']:.2f}x / {r['batch_8'] / ref['batch_8']:.2f}x |")


if __name__ == "__main__":
    main()
