"""Audio-only evaluation by RAVDESS actor folds.

Protocols (RAVDESS actors 01-20; odd = male, even = female, every fold 2 + 2):
- `select`:  4 folds of 4 over actors 01-16 (the training actors): choices are made here.
- `folds5`:  5 folds of 4 over actors 01-20, reported as mean ± sd.
- `heldout`: actors 01-16 -> 17-20 (trainer/data/splits.py's test actors).
TESS is added to every training side when asked ("+TESS"); TESS itself is reported apart,
on its held-out words (splits.py), since its two voices are on both sides of any split.

Run: `python -m trainer.voice.evaluation extract` (decode + frame features, cached), then
`python -m trainer.voice.evaluation table` (the comparison table) and `... onnx` (the final
figure through exported ONNX files).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from service.pipeline.config import PipelineConfig
from trainer.cache import FeatureCache
from trainer.data import BASIC7, load_ravdess, load_tess
from trainer.data.sample import Sample
from trainer.data.splits import RAVDESS_TEST, split_of
from trainer.paths import CACHE_DIR, DATA_DIR, REPO_ROOT
from trainer.voice.features import AudioFrames, all_frame_features

DATA = DATA_DIR
CACHE = CACHE_DIR / "features"
OUT = REPO_ROOT / "bench" / "results"

CONFIGS = {
    "mfcc13": PipelineConfig(),                                  # the paper's (today's bundle)
    "rich": PipelineConfig(audio_features="rich", n_mels=64),
}
GATE_DB = 35.0
ACTORS = [f"{i:02d}" for i in range(1, 21)]


def protocol(name: str) -> list[tuple[set[str], set[str]]]:
    """(train actors, test actors) per split."""
    if name == "select":
        groups = [set(ACTORS[i:i + 4]) for i in range(0, 16, 4)]
        pool = set(ACTORS[:16])
    elif name == "folds5":
        groups = [set(ACTORS[i:i + 4]) for i in range(0, 20, 4)]
        pool = set(ACTORS)
    elif name == "heldout":
        return [(set(ACTORS) - RAVDESS_TEST, set(RAVDESS_TEST))]
    else:
        raise ValueError(name)
    return [(pool - g, g) for g in groups]


TESS_EVERY = 4  # TESS files used: every 4th (700 of 2800, all emotions, both voices): CPU time


def load(data: Path = DATA, tess_every: int = TESS_EVERY) -> tuple[list[Sample], list[Sample]]:
    rav = sorted(load_ravdess(data / "ravdess"), key=lambda s: str(s.path))
    tess = sorted(load_tess(data / "tess"), key=lambda s: str(s.path))[::tess_every]
    return rav, tess


def actor(s: Sample) -> str:
    return s.speaker.split(":", 1)[1]


def labels(samples: list[Sample]) -> np.ndarray:
    return np.array([BASIC7.index(s.label) for s in samples])


def extract(data: Path, cache_dir: Path, names: tuple[str, ...] = tuple(CONFIGS),
            tess_every: int = TESS_EVERY) -> dict[str, list[AudioFrames]]:
    rav, tess = load(data, tess_every)
    samples = rav + tess
    t = time.time()
    per_cfg = all_frame_features(samples, [CONFIGS[n] for n in names], FeatureCache(cache_dir))
    print(f"{len(samples)} files, {time.time() - t:.0f} s", file=sys.stderr)
    return dict(zip(names, per_cfg))


# ----------------------------------------------------------------------------- probes

STATS5 = ("mean", "std", "p10", "p50", "p90")


def variants() -> list[dict]:
    """The table's rows: (frame features, what is summarised, gate, statistics)."""
    v = [
        dict(name="13 MFCC, mean+std over all frames", cfg="mfcc13", level="frames", gate=False, stats=("mean", "std")),
        dict(name="13 MFCC -> AE-32 codes, mean+std, all frames (paper)", cfg="mfcc13", level="codes", code=32,
             gate=False, stats=("mean", "std")),
        dict(name="13 MFCC -> AE-32 codes, mean+std, speech-gated", cfg="mfcc13", level="codes", code=32,
             gate=True, stats=("mean", "std")),
        dict(name="rich frames (144), 5 stats, all frames", cfg="rich", level="frames", gate=False, stats=STATS5),
        dict(name="rich frames (144), 5 stats, speech-gated", cfg="rich", level="frames", gate=True, stats=STATS5),
        dict(name="rich -> AE-32 codes, 5 stats, all frames", cfg="rich", level="codes", code=32, gate=False,
             stats=STATS5),
        dict(name="rich -> AE-32 codes, 5 stats, speech-gated", cfg="rich", level="codes", code=32, gate=True,
             stats=STATS5),
        dict(name="rich -> AE-64 codes, 5 stats, speech-gated", cfg="rich", level="codes", code=64, gate=True,
             stats=STATS5),
    ]
    for row in v:
        row["key"] = "|".join(str(row.get(k)) for k in ("cfg", "level", "code", "gate", "stats"))
    return v


def encoder_codes(frames: list[AudioFrames], train_idx: np.ndarray, cfg: PipelineConfig, code: int,
                  cache: FeatureCache, tag: str, seed: int = 0) -> list[np.ndarray]:
    """AE codes of every clip from an encoder trained on the frames of `train_idx` (cached)."""
    from trainer.voice.features import train_audio_encoder

    key = cache.key("audio-eval-codes-v1", tag, code, seed, sorted(train_idx.tolist()))

    def compute() -> dict[str, np.ndarray]:
        rows = np.concatenate([frames[i].features for i in train_idx if len(frames[i].features)])
        enc = train_audio_encoder(rows, replace(cfg, audio_code_dim=code), seed=seed, epochs=5, max_rows=120_000)
        allf = np.concatenate([f.features for f in frames])
        codes = enc.predict(allf, batch_size=8192, verbose=0).astype(np.float32)
        return {"codes": codes}

    codes = cache.get("audio_eval_codes", key, compute)["codes"]
    bounds = np.cumsum([0] + [len(f.features) for f in frames])
    return [codes[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def utterance_matrix(per_clip: list[np.ndarray], frames: list[AudioFrames], gate: bool,
                     stats: tuple[str, ...]) -> np.ndarray:
    from service.pipeline.audio_frames import speech_active, utterance_stats
    return np.stack([utterance_stats(x, speech_active(f.energy_db, GATE_DB if gate else 0.0), stats)
                     for x, f in zip(per_clip, frames)])


def svm_fit_predict(xtr, ytr, xte, c: float):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC
    model = make_pipeline(StandardScaler(), SVC(C=c, kernel="rbf", gamma="scale", class_weight="balanced"))
    model.fit(xtr, ytr)
    return model.predict(xte)


def scores(y, pred) -> dict[str, float]:
    from sklearn.metrics import balanced_accuracy_score, f1_score
    return {"acc": float((y == pred).mean()), "uar": float(balanced_accuracy_score(y, pred)),
            "f1": float(f1_score(y, pred, average="macro"))}


C_GRID = (1.0, 3.0, 10.0, 30.0)


def run_table(data: Path, cache_dir: Path, out: Path, only: str | None = None) -> dict:
    """Every variant x {RAVDESS only, +TESS}: C chosen on `select` (actors 01-16), then
    `folds5` and `heldout` with that C; TESS held-out words beside. Results are kept in
    `out`/audio_table.json and resumed."""
    cache = FeatureCache(cache_dir)
    rav, tess = load(data)
    needed = tuple(sorted({v["cfg"] for v in variants() if not only or only in v["key"]}))
    feats = extract(data, cache_dir, needed)
    n_rav = len(rav)
    y = labels(rav + tess)
    actors = np.array([actor(s) for s in rav] + ["tess"] * len(tess))
    tess_test = np.array([False] * n_rav + [split_of(s) == "test" for s in tess])
    results_file = out / "audio_table.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    out.mkdir(parents=True, exist_ok=True)
    for var in variants():
        if only and only not in var["key"]:
            continue
        frames = feats[var["cfg"]]
        cfg = CONFIGS[var["cfg"]]
        for with_tess in (False, True):
            rkey = f"{var['key']}|tess={with_tess}"
            if rkey in results:
                continue
            t0 = time.time()
            splits = {p: protocol(p) for p in ("select", "folds5", "heldout")}
            row: dict = {"name": var["name"], "tess": with_tess}

            def matrix(train_actors: set[str]) -> np.ndarray:
                if var["level"] == "frames":
                    per_clip = [f.features for f in frames]
                else:
                    tr = np.flatnonzero(np.isin(actors, sorted(train_actors)) | (actors == "tess"))
                    per_clip = encoder_codes(frames, tr, cfg, var["code"], cache, var["cfg"])
                return utterance_matrix(per_clip, frames, var["gate"], var["stats"])

            mats = {}

            def split_xy(train_actors, test_actors):
                key = tuple(sorted(train_actors))
                if key not in mats:
                    mats[key] = matrix(train_actors)
                x = mats[key]
                tr = np.isin(actors, sorted(train_actors)) | ((actors == "tess") & with_tess & ~tess_test)
                te = np.isin(actors, sorted(test_actors))
                return x, tr, te

            sel = {c: [] for c in C_GRID}
            for train_a, test_a in splits["select"]:
                x, tr, te = split_xy(train_a, test_a)
                for c in C_GRID:
                    sel[c].append(scores(y[te], svm_fit_predict(x[tr], y[tr], x[te], c))["acc"])
            best_c = max(C_GRID, key=lambda c: np.mean(sel[c]))
            row["select"] = {str(c): float(np.mean(v)) for c, v in sel.items()}
            row["C"] = best_c
            fold_scores = []
            for train_a, test_a in splits["folds5"]:
                x, tr, te = split_xy(train_a, test_a)
                fold_scores.append(scores(y[te], svm_fit_predict(x[tr], y[tr], x[te], best_c)))
            row["folds5"] = {m: [float(np.mean([f[m] for f in fold_scores])), float(np.std([f[m] for f in fold_scores]))]
                             for m in fold_scores[0]}
            row["folds5_each"] = fold_scores
            (train_a, test_a), = splits["heldout"]
            x, tr, te = split_xy(train_a, test_a)
            row["heldout"] = scores(y[te], svm_fit_predict(x[tr], y[tr], x[te], best_c))
            if with_tess:
                tr2 = tr | ((actors == "tess") & ~tess_test)
                row["tess_test"] = scores(y[tess_test], svm_fit_predict(x[tr2], y[tr2], x[tess_test], best_c))
            row["seconds"] = round(time.time() - t0, 1)
            results[rkey] = row
            results_file.write_text(json.dumps(results, indent=1))
            print(format_row(row), file=sys.stderr, flush=True)
    return results


def format_row(row: dict) -> str:
    f = row["folds5"]
    h = row["heldout"]
    t = row.get("tess_test", {}).get("acc")
    return (f"| {row['name']} | {'yes' if row['tess'] else 'no'} | {row['C']:g} | "
            f"{f['acc'][0]:.3f} ± {f['acc'][1]:.3f} | {f['uar'][0]:.3f} ± {f['uar'][1]:.3f} | "
            f"{h['acc']:.3f} / {h['uar']:.3f} | {'' if t is None else f'{t:.3f}'} |")


def run_onnx(data: Path, cache_dir: Path, out: Path, cfg_name: str = "rich", code: int = 64,
             stats: tuple[str, ...] = STATS5, with_tess: bool = True, source: str = "codes", svm_c: float = 10.0,
             members: int = 1, tess_every: int = TESS_EVERY,
             protocols: tuple[str, ...] = ("folds5", "heldout"), codecs: tuple[str, ...] = ()) -> dict:
    """The final figure through ONNX files: per split of `folds5` and `heldout`, an audio
    encoder trained on the training side's frames (RAVDESS training actors + TESS),
    exported with `export_onnx`; codes from ONNX Runtime; speech-gated utterance
    statistics (the pipeline's `utterance_stats`); the utterance classifier exported with
    `export_onnx` and run by ONNX Runtime (`members` > 1: the average of that many, from
    different seeds, as the bundle's audio head; `codecs`: the training side also gets each
    clip's lossy round trips, trainer.voice.features.CODECS, with `--source frames` only).
    The SVM on the same ONNX codes is reported beside."""
    from service.model.bundle import open_session
    from trainer.export import export_onnx
    from trainer.stages.audio_head import average_of
    from trainer.voice.features import coded_utterances, train_audio_encoder, train_utterance_classifier

    def ort_session(path, threads: int = 1):
        return open_session(path, path.stem, ["CPUExecutionProvider"], threads).session

    rav, tess = load(data, tess_every)
    feats = extract(data, cache_dir, (cfg_name,), tess_every)[cfg_name]
    cfg = replace(CONFIGS[cfg_name], audio_code_dim=code, speech_gate_db=GATE_DB,
                  audio_utterance_stats=",".join(stats), audio_utterance_source=source)
    y = labels(rav + tess)
    actors = np.array([actor(s) for s in rav] + ["tess"] * len(tess))
    tess_test = np.array([False] * len(rav) + [split_of(s) == "test" for s in tess])
    art = out / "audio_onnx"
    res: dict = {"config": cfg.to_dict(), "splits": {}}
    if codecs and source != "frames":
        raise ValueError("codec copies are only implemented for --source frames")
    x_coded = [coded_utterances(rav + tess, CONFIGS[cfg_name], cfg, FeatureCache(cache_dir), c) for c in codecs]
    allf = np.concatenate([f.features for f in feats])
    bounds = np.cumsum([0] + [len(f.features) for f in feats])
    for pname in protocols:
        for i, (train_a, test_a) in enumerate(protocol(pname)):
            t0 = time.time()
            name = f"{pname}{i}"
            e = None
            if source == "codes":
                tr_frames = np.isin(actors, sorted(train_a)) | (actors == "tess")
                rows = np.concatenate([feats[j].features for j in np.flatnonzero(tr_frames) if len(feats[j].features)])
                enc = train_audio_encoder(rows, cfg)
                e = export_onnx(enc, art / f"{name}_audio_encoder.onnx", sample_inputs=rows[:256],
                                input_name="frames", output_name="code")
                sess = ort_session(e.path, threads=2)
                codes = np.concatenate([sess.run(["code"], {"frames": allf[a:a + 20000]})[0]
                                        for a in range(0, len(allf), 20000)])
                per_clip = [codes[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
            else:  # the side input summarises the frame features; no encoder is involved in it
                per_clip = [f.features for f in feats]
            x = np.stack([utterance_vector_gated(c, f, cfg) for c, f in zip(per_clip, feats)])
            tr = np.isin(actors, sorted(train_a)) | ((actors == "tess") & with_tess & ~tess_test)
            te = np.isin(actors, sorted(test_a))
            x_tr = np.concatenate([x[tr]] + [xc[tr] for xc in x_coded])
            y_tr = np.concatenate([y[tr]] * (1 + len(x_coded)))
            clf = average_of([train_utterance_classifier(x_tr, y_tr, len(BASIC7), seed=m, name=f"audio_mlp_{m}")
                              for m in range(members)], x.shape[1])
            c = export_onnx(clf, art / f"{name}_audio_classifier.onnx", sample_inputs=x[tr][:64],
                            input_name="utterance", output_name="probs")
            probs = ort_session(c.path).run(["probs"], {"utterance": x[te].astype(np.float32)})[0]
            entry = {"test_actors": sorted(test_a), "onnx_mlp": scores(y[te], probs.argmax(1)),
                     "svm_on_onnx_codes": scores(y[te], svm_fit_predict(x[tr], y[tr], x[te], svm_c)),
                     "encoder_parity": e.max_abs_diff if e else None, "classifier_parity": c.max_abs_diff,
                     "seconds": round(time.time() - t0, 1)}
            if pname == "heldout":
                from sklearn.metrics import confusion_matrix
                entry["confusion"] = confusion_matrix(y[te], probs.argmax(1), labels=range(len(BASIC7))).tolist()
                tp = ort_session(c.path).run(["probs"], {"utterance": x[tess_test].astype(np.float32)})[0]
                entry["tess_test_words"] = scores(y[tess_test], tp.argmax(1))
            res["splits"][name] = entry
            print(name, json.dumps({k: v for k, v in entry.items() if k != "confusion"}), file=sys.stderr, flush=True)
    for pname in set(protocols) - {"heldout"}:
        res.update(fold_summary(res["splits"], pname))
    out.mkdir(parents=True, exist_ok=True)
    tag = f"_m{members}_tess{tess_every}" if (members, tess_every) != (1, TESS_EVERY) else ""
    tag += "".join(f"_{c}" for c in codecs)
    (out / f"audio_onnx_{cfg_name}_{code}_{source}{tag}_{'-'.join(protocols)}.json").write_text(json.dumps(res, indent=1))
    return res


def fold_summary(splits: dict[str, dict], pname: str) -> dict[str, dict[str, list[float]]]:
    """[mean, sd] of each score over the folds of protocol `pname`, per classifier."""
    folds = [v for k, v in splits.items() if k.startswith(pname)]
    return {f"{pname}_{m}": {k: [float(np.mean([f[m][k] for f in folds])), float(np.std([f[m][k] for f in folds]))]
                             for k in ("acc", "uar", "f1")} for m in ("onnx_mlp", "svm_on_onnx_codes")}


def utterance_vector_gated(codes: np.ndarray, frames: AudioFrames, cfg: PipelineConfig) -> np.ndarray:
    from trainer.voice.features import utterance_vector
    return utterance_vector(codes, frames.active(cfg), cfg, frames.voice)


TABLE_HEAD = ("| utterance features | +TESS | C (select) | RAVDESS 5 folds acc | UAR | held-out 17-20 acc / UAR "
              "| TESS test words acc |\n|---|---|---|---|---|---|---|")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m trainer.voice.evaluation")
    ap.add_argument("command", choices=["extract", "table", "onnx"])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--cache", type=Path, default=CACHE)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--only", default=None, help="run the variants whose key contains this")
    ap.add_argument("--cfg", default="rich", choices=sorted(CONFIGS))
    ap.add_argument("--code", type=int, default=64)
    ap.add_argument("--source", default="codes", choices=["codes", "frames"])
    ap.add_argument("--svm-c", type=float, default=10.0, help="C of the SVM reported beside (the table's select-protocol choice)")
    ap.add_argument("--members", type=int, default=1, help="MLPs averaged in the ONNX classifier (the bundle's head: 5)")
    ap.add_argument("--tess-every", type=int, default=TESS_EVERY, help="use every Nth TESS file (1: all)")
    ap.add_argument("--protocols", default="folds5,heldout", help="comma list of select, folds5, heldout")
    ap.add_argument("--codecs", default="", help="comma list of trainer.voice.features.CODECS whose round trips "
                                                 "join the training side (the bundle's head: mp3_160k,mp3_64k)")
    args = ap.parse_args(argv)
    if args.command == "extract":
        extract(args.data, args.cache)
    elif args.command == "table":
        results = run_table(args.data, args.cache, args.out, args.only)
        print(TABLE_HEAD)
        for row in results.values():
            print(format_row(row))
    elif args.command == "onnx":
        protocols = tuple(p for p in args.protocols.split(",") if p)
        res = run_onnx(args.data, args.cache, args.out, args.cfg, args.code, source=args.source, svm_c=args.svm_c,
                       members=args.members, tess_every=args.tess_every, protocols=protocols,
                       codecs=tuple(c for c in args.codecs.split(",") if c))
        for m in ("onnx_mlp", "svm_on_onnx_codes"):
            print(m, {p: res.get(f"{p}_{m}") or res["splits"]["heldout0"][m] for p in protocols})


if __name__ == "__main__":
    main()
