"""The Bi-LSTM-SA against the Bi-LSTM and CNN baselines and the late-fusion references, retrained
from several seeds on one build's cached inputs (the goal: "on identical inputs, whatever the
outcome"; a single build's ranking moves with the seed).

Reads the build cache of `trainer build --out models/default` (`.cache/builds/default/`: the
pairs, the feature mask and the audio head), so run a build first. Per seed, each classifier
is trained as the `classifiers` stage trains it (trainer.stages.classifiers.fit_classifier)
and scored on the RAVDESS test pseudo-pairs (held-out actors, one face per clip); the late
references pool the audio head with that seed's Bi-LSTM-SA face view, the weights fitted on
validation speakers (trainer.fusion.late.fit_weights).

    .venv/bin/python bench/classifier_seeds.py --seeds 1 2 3 4      # ~5 min per seed on 2 cores
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from dataclasses import fields, replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build-cache", type=Path, default=REPO / ".cache" / "builds" / "default")
    p.add_argument("--bundle", type=Path, default=REPO / "models" / "default", help="for its pipeline config")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4])
    args = p.parse_args()

    import trainer.stages.audio_head  # noqa: F401  (registers the stage outputs load_output reads)
    import trainer.stages.fusion  # noqa: F401
    import trainer.stages.selection  # noqa: F401
    from service.model.bundle import open_session
    from service.model.calibration import log_linear_pool
    from service.pipeline.config import PipelineConfig
    from trainer.fusion.late import fit_weights
    from trainer.recipe import Recipe
    from trainer.stages import load_output
    from trainer.stages.classifiers import CLASSIFIERS, audio_head_view, fit_classifier, speaker_disjoint

    staging = Path(tempfile.mkdtemp())
    pairs = load_output(args.build_cache / "pairs", staging)
    mask = load_output(args.build_cache / "feature_selection", staging).mask
    head = open_session(load_output(args.build_cache / "audio_head", staging).export.path, "audio_head")
    manifest = json.loads((args.bundle / "manifest.json").read_text())
    cfg = PipelineConfig.from_dict(manifest["preprocessing"])
    # The recipe the bundle was built with, as its manifest records it.
    used = manifest["provenance"]["options"]
    recorded = {f.name: used[f.name] for f in fields(Recipe) if f.name in used}
    recipe = Recipe.for_profile(used["profile"], **{k: tuple(v) if isinstance(v, list) else v for k, v in recorded.items()})
    train, val, test = pairs.data["train"], speaker_disjoint(pairs.data["val"]), pairs.data["test"]
    test = {k: v[np.char.startswith(test["group"].astype(str), "ravdess")] for k, v in test.items()}

    def view(d, name):
        rows = d["view"] == name
        return d["y"][rows], d["X"][rows][..., mask]

    _, audio_val = audio_head_view(head, val, cfg)
    _, audio_test = audio_head_view(head, test, cfg)
    runs = []
    for seed in args.seeds:
        run = {"seed": seed}
        for name in CLASSIFIERS:
            model = fit_classifier(name, train, pairs.data["val"], mask, cfg.layout(), len(manifest["classes"]),
                                   replace(recipe, seed=seed))
            y, x = view(test, "fused")
            run[name] = float((model.predict(x, verbose=0).argmax(1) == y).mean())
            if name == "bilstm_sa":  # the face expert of the late references
                y_val, x_val = view(val, "face")
                y_test, x_test = view(test, "face")
                face_val, face_test = model.predict(x_val, verbose=0), model.predict(x_test, verbose=0)
                w = fit_weights(y_val, audio_val, face_val)
                run["late_product"] = float((log_linear_pool(audio_test, face_test).argmax(1) == y_test).mean())
                run["late_weighted"] = float((log_linear_pool(audio_test, face_test, *w).argmax(1) == y_test).mean())
        print(json.dumps(run), flush=True)
        runs.append(run)
    print("\n| model | " + " | ".join(f"seed {r['seed']}" for r in runs) + " | mean ± sd |")
    print("|---|" + "---|" * (len(runs) + 1))
    for key in (*CLASSIFIERS, "late_product", "late_weighted"):
        v = [r[key] for r in runs]
        sd = statistics.stdev(v) if len(v) > 1 else 0.0
        print(f"| {key} | " + " | ".join(f"{x:.3f}" for x in v) + f" | {statistics.mean(v):.3f} ± {sd:.3f} |")


if __name__ == "__main__":
    main()
