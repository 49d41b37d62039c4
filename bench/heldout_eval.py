"""End-to-end accuracy on held-out data, through a real server (bench/README.md).

Clips are built with ffmpeg from a held-out split of the project (trainer.data.splits.split_of) and
posted to `python -m service` (service/run/harness.py), as a client would send them:

- `av`: a RAVDESS speech clip muxed with ONE FER2013 face still of the same emotion (upscaled
  to 240 px, centred in a 640x480 grey frame, for the speech's duration), H.264 + AAC mp4;
- `face`: the same still as a silent 3 s mp4 (no audio stream);
- `audio`: the speech alone, AAC in an .m4a (no video stream);
- `cremad`: the six real CREMA-D clips (../shared/data/cremad_av), posted as they are;
- `framing`: the `audio` kind's speech re-framed (served_clips.reframe, seeded by `--seed`): `trim2s`
  (2.0 s from the first word), `cut` (a 1.5-3.0 s window inside the speech), `pad` (0.5-2.0 s of
  digital silence before and after the speech), `late` (the speech 1.0-3.0 s into 6 s of
  silence); AAC .m4a like `audio`, one row per framing;
- `urdu`: every URDU clip (natural Urdu talk-show speech, 4 emotions; evaluation only, never
  trained on), its FLAC posted as it is: accuracy over the 7 classes and over its 4;
- `urdu_face`: each URDU clip muxed (as `av`) with ONE face still of the same emotion from the
  split: is the fused answer worse than the face alone?

`--split val` (RAVDESS actors 15-16 + FER2013 train's validation bucket) is for development;
`--split test` (RAVDESS actors 17-20 + FER2013 public_test) for final figures only. URDU is all
test data whatever the split (only its faces follow `--split`): report it, never tune on it.

It prints a markdown table (stdout; progress on stderr), one row per kind (per framing), then a
URDU table (accuracy over 7 and over 4 classes, answered labels, fused against face alone) and
writes every answer to `--out`. `--kinds` defaults to av,face,audio,cremad.

    .venv/bin/python bench/heldout_eval.py --split val --limit 3
    .venv/bin/python bench/heldout_eval.py --split val --kinds audio,framing,urdu,urdu_face
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from service.model.calibration import expected_calibration_error  # noqa: E402  (numpy only)
from service.run.harness import ServiceProcess  # noqa: E402  (standard library only)
from trainer.data import BASIC7, map_label  # noqa: E402  (no TensorFlow)
from trainer.data.cremad import EMOTIONS as CREMAD_EMOTIONS  # noqa: E402
from trainer.data.ravdess import EMOTIONS as RAVDESS_EMOTIONS  # noqa: E402
from trainer.data.ravdess import FILE_RE as RAVDESS_RE
from trainer.fusion.calibrate import ece_floor  # noqa: E402  (no TensorFlow)
from trainer.fusion.served_clips import (  # noqa: E402, F401  (no TensorFlow; Item is for callers)
    AAC,
    BACKGROUND,
    FACE_ONLY_S,
    FACE_PX,
    FPS,
    FRAME_H,
    FRAME_W,
    FRAMING_RECIPE,
    FRAMINGS,
    RECIPE,
    SPEECH_DB,
    SPLITS,
    X264,
    Item,
    Pair,
    cut_window,
    frame_levels,
    framing_seed,
    heldout_sources,
    make_audio,
    make_av,
    make_face,
    make_framed,
    pair_clips,
    pick_clips,
    rafdb_sources,
    reframe,
    speech_span,
    urdu_sources,
)

DEFAULT_DATA = Path(os.environ.get("EMOTION_DATA_DIR", REPO.parent / "shared" / "data"))
DEFAULT_CACHE = REPO / ".cache" / "served_clips"  # shared with trainer.fusion.served_calibration
KINDS = ("av", "face", "audio", "cremad", "framing", "urdu", "urdu_face", "rafdb_face")
DEFAULT_KINDS = ("av", "face", "audio", "cremad")
AUDIO_ONLY = ("audio", "framing", "urdu")  # kinds posted without a video stream
URDU4 = ("neutral", "happy", "sad", "angry")  # URDU's emotions, in basic7 order
ECE_BINS = 15
CONFIDENT = 0.9


# ---------------------------------------------------------------- labels and samples (pure)

def ravdess_label(name: str) -> str:
    """basic7 label of a RAVDESS file name (03-01-EE-II-SS-RR-AA.ext): calm (02) -> neutral."""
    m = RAVDESS_RE.fullmatch(Path(name).name)
    if not m:
        raise ValueError(f"{name!r} is not a RAVDESS file name (03-01-EE-II-SS-RR-AA.flac)")
    code = m.group(3)
    if code not in RAVDESS_EMOTIONS:
        raise ValueError(f"{name!r}: unknown RAVDESS emotion code {code}")
    return map_label(RAVDESS_EMOTIONS[code], "basic7")


def cremad_label(name: str) -> str:
    """basic7 label of a CREMA-D file name (1001_DFA_ANG_XX.flv)."""
    return map_label(CREMAD_EMOTIONS[Path(name).name.split("_")[2].upper()], "basic7")


# ---------------------------------------------------------------- metrics (pure)

def classification_metrics(truth: Sequence[str], probs: np.ndarray, classes: Sequence[str] = BASIC7) -> dict:
    """Accuracy, UAR and macro-F1 (both over the classes present in `truth`), ECE (15 equal-width
    bins), mean confidence, wrong answers above 0.9, per-class recall and the confusion matrix
    (rows truth, columns prediction, in `classes` order). `probs`: [n, len(classes)]."""
    n = len(truth)
    if n == 0:
        return {"n": 0}
    probs = np.asarray(probs, np.float64)
    y = np.array([list(classes).index(t) for t in truth])
    pred = probs.argmax(axis=1)
    conf = probs.max(axis=1)
    right = pred == y
    present = [c for c in range(len(classes)) if (y == c).any()]
    recall, f1 = {}, []
    for c in present:
        tp = int(((pred == c) & (y == c)).sum())
        rec = tp / int((y == c).sum())
        npred = int((pred == c).sum())
        prec = tp / npred if npred else 0.0
        recall[classes[c]] = rec
        f1.append(0.0 if tp == 0 else 2 * prec * rec / (prec + rec))
    confusion = np.zeros((len(classes), len(classes)), int)
    for t, p in zip(y, pred):
        confusion[t, p] += 1
    return {
        "n": n,
        "accuracy": float(right.mean()),
        "uar": float(np.mean(list(recall.values()))),
        "macro_f1": float(np.mean(f1)),
        "ece": expected_calibration_error(y, probs, bins=ECE_BINS),
        "ece_floor": ece_floor(probs),    # what perfectly calibrated answers would show on n clips
        "mean_confidence": float(conf.mean()),
        "wrong_confident": int(((~right) & (conf > CONFIDENT)).sum()),
        "recall": recall,
        "confusion": confusion.tolist(),
    }


def prob_vector(probabilities: dict[str, float], classes: Sequence[str] = BASIC7) -> np.ndarray:
    return np.array([float(probabilities.get(c, 0.0)) for c in classes])


def restricted_accuracy(truth: Sequence[str], probs: np.ndarray, subset: Sequence[str],
                        classes: Sequence[str] = BASIC7) -> float | None:
    """Accuracy of the argmax over the probabilities of `subset` only (URDU: its 4 emotions)."""
    if not len(truth):
        return None
    idx = np.array([list(classes).index(c) for c in subset])
    pred = idx[np.asarray(probs, np.float64)[:, idx].argmax(axis=1)]
    return float(np.mean(pred == np.array([list(classes).index(t) for t in truth])))


def row_name(kind: str, variant: str | None = None) -> str:
    """A table row: the kind, or kind:variant (framing:trim2s)."""
    return kind if variant is None else f"{kind}:{variant}"


# ---------------------------------------------------------------- clips (ffmpeg, cached)

@dataclass
class Job:
    kind: str
    label: str
    sources: dict[str, str]
    make: object  # () -> Path
    path: Path | None = None
    variant: str | None = None  # framing: trim2s, cut, pad, late

    @property
    def row(self) -> str:
        return row_name(self.kind, self.variant)


def plan_jobs(kinds: Sequence[str], pairs: list[Pair], cremad: list[Item], cache: Path,
              urdu: Sequence[Item] = (), urdu_pairs: Sequence[Pair] = (), seed: int = 0,
              rafdb: Sequence[Item] = ()) -> list[Job]:
    jobs: list[Job] = []
    for p in pairs:
        src = {"speech": str(p.speech.path), "face": str(p.face.path)}
        if "av" in kinds:
            jobs.append(Job("av", p.label, src, lambda p=p: make_av(p, cache)))
        if "face" in kinds:
            jobs.append(Job("face", p.label, {"face": src["face"]}, lambda p=p: make_face(p.face, cache)))
        if "audio" in kinds:
            jobs.append(Job("audio", p.label, {"speech": src["speech"]}, lambda p=p: make_audio(p.speech, cache)))
    if "cremad" in kinds:
        jobs += [Job("cremad", c.label, {"clip": str(c.path)}, lambda c=c: c.path) for c in cremad]
    if "framing" in kinds:
        jobs += [Job("framing", p.label, {"speech": str(p.speech.path)},
                     lambda p=p, v=v: make_framed(p.speech, v, seed, cache), variant=v)
                 for v in FRAMINGS for p in pairs]
    if "urdu" in kinds:
        jobs += [Job("urdu", u.label, {"clip": str(u.path)}, lambda u=u: u.path) for u in urdu]
    if "urdu_face" in kinds:
        jobs += [Job("urdu_face", p.label, {"speech": str(p.speech.path), "face": str(p.face.path)},
                     lambda p=p: make_av(p, cache)) for p in urdu_pairs]
    if "rafdb_face" in kinds:
        jobs += [Job("rafdb_face", f.label, {"face": str(f.path)}, lambda f=f: make_face(f, cache)) for f in rafdb]
    return jobs


# ---------------------------------------------------------------- posting

def post(client, url: str, path: Path, tries: int = 30) -> dict:
    """One POST /predict; a 503 (full) is retried after its Retry-After."""
    for _ in range(tries):
        t0 = time.perf_counter()
        with open(path, "rb") as fh:
            resp = client.post(url + "/predict", files={"file": (path.name, fh, "application/octet-stream")})
        wall = time.perf_counter() - t0
        if resp.status_code == 503:
            time.sleep(float(resp.headers.get("Retry-After", "1") or 1))
            continue
        try:
            body = resp.json()
        except ValueError:
            body = {"error": {"code": "not_json", "message": resp.text[:500]}}
        return {"status": resp.status_code, "body": body, "wall_s": round(wall, 3)}
    return {"status": 503, "body": {"error": {"code": "overloaded", "message": f"503 {tries} times"}}, "wall_s": None}


def run_requests(url: str, jobs: list[Job], workers: int, timeout_s: float) -> list[dict]:
    import httpx  # the dev extra; imported here so the pure parts need only numpy

    done, lock, records = 0, threading.Lock(), []
    with httpx.Client(timeout=timeout_s) as client:
        def one(job: Job) -> dict:
            nonlocal done
            answer = post(client, url, job.path)
            body = answer["body"]
            rec = {"kind": job.kind, "clip": str(job.path), "sources": job.sources, "true": job.label,
                   "status": answer["status"], "wall_s": answer["wall_s"]}
            if job.variant is not None:
                rec["variant"] = job.variant
            if answer["status"] == 200:
                rec.update({k: body.get(k) for k in ("label", "probabilities", "probabilities_by_modality",
                                                      "modalities", "duration_s")})
            else:
                rec["error"] = body.get("error", body)
            with lock:
                done += 1
                print(f"  [{done}/{len(jobs)}] {job.row:6s} {job.path.name}: {answer['status']} "
                      f"{rec.get('label', rec.get('error', {}).get('code'))} (true {job.label})", file=sys.stderr)
            return rec

        with ThreadPoolExecutor(workers) as pool:
            records = list(pool.map(one, jobs))
    return records


# ---------------------------------------------------------------- summary

def _view_accuracy(recs: list[dict], view: str) -> tuple[float | None, int]:
    """Accuracy of probabilities_by_modality[view] over the answers that carry it."""
    got = [(r["true"], r["probabilities_by_modality"][view]) for r in recs
           if (r.get("probabilities_by_modality") or {}).get(view)]
    if not got:
        return None, 0
    right = [t == max(p, key=p.get) for t, p in got]
    return float(np.mean(right)), len(got)


def _view_label(r: dict, view: str) -> str | None:
    p = (r.get("probabilities_by_modality") or {}).get(view)
    return max(p, key=p.get) if p else None


def record_row(r: dict) -> str:
    return row_name(r["kind"], r.get("variant"))


def summarise(records: list[dict], kinds: Sequence[str]) -> dict:
    """Figures per row: `kinds` are row names (framing's rows are framing:trim2s, ...; a bare
    "framing" stands for all of its rows present in `records`)."""
    rows: list[str] = []
    for kind in kinds:
        if kind == "framing":
            rows += [row_name("framing", v) for v in FRAMINGS
                     if any(record_row(r) == row_name("framing", v) for r in records)]
        else:
            rows.append(kind)
    out = {}
    for row in rows:
        kind = row.split(":", 1)[0]
        recs = [r for r in records if record_row(r) == row]
        ok = [r for r in recs if r["status"] == 200]
        truth = [r["true"] for r in ok]
        probs = np.array([prob_vector(r["probabilities"]) for r in ok]).reshape(len(ok), -1)
        s: dict = classification_metrics(truth, probs)
        s["requests"] = len(recs)
        s["errors"] = dict(Counter(f"{r['status']} {r['error'].get('code')}" for r in recs if r["status"] != 200))
        s["face"] = dict(Counter((r.get("modalities") or {}).get("face") for r in ok))
        s["audio"] = dict(Counter((r.get("modalities") or {}).get("audio") for r in ok))
        for view in ("audio", "face"):
            acc, n = _view_accuracy(ok, view)
            s[f"{view}_view_accuracy"], s[f"{view}_view_n"] = acc, n
        s["answered"] = dict(Counter(r["label"] for r in ok).most_common())
        if kind in ("urdu", "urdu_face"):
            s["accuracy_4"] = restricted_accuracy(truth, probs, URDU4)
        if kind not in AUDIO_ONLY:  # the fused answer against the face alone, clip by clip
            both = [(r["label"] == r["true"], _view_label(r, "face") == r["true"]) for r in ok
                    if _view_label(r, "face")]
            s["face_right_fused_wrong"] = sum(f and not a for a, f in both)
            s["fused_right_face_wrong"] = sum(a and not f for a, f in both)
        out[row] = s
    return out


def _f(x, digits: int = 3) -> str:
    return "–" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{digits}f}"


def markdown(summary: dict, records: list[dict], meta: dict) -> str:
    lines = [f"Held-out split `{meta['split']}` ({meta['split_note']}), bundle `{meta['model_dir']}` "
             f"({meta['model']}), limit {meta['limit']} per emotion, seed {meta['seed']}", "",
             "| kind | n | errors | face detected | accuracy | UAR | macro-F1 | ECE | ECE floor | mean conf "
             "| wrong >0.9 | audio-view acc (n) | face-view acc (n) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for kind, s in summary.items():
        n = s.get("n", 0)
        errors = sum(s["errors"].values())
        faces = f"{s['face'].get('detected', 0)}/{n}" if kind.split(":")[0] not in AUDIO_ONLY else "–"
        views = []
        for view in ("audio", "face"):
            views.append("–" if s[f"{view}_view_accuracy"] is None else
                         f"{_f(s[f'{view}_view_accuracy'])} ({s[f'{view}_view_n']})")
        lines.append(f"| {kind} | {n} | {errors} | {faces} | {_f(s.get('accuracy'))} | {_f(s.get('uar'))} "
                     f"| {_f(s.get('macro_f1'))} | {_f(s.get('ece'))} | {_f(s.get('ece_floor'))} "
                     f"| {_f(s.get('mean_confidence'))} "
                     f"| {s.get('wrong_confident', '–')} | {views[0]} | {views[1]} |")
    urdu = [(k, s) for k, s in summary.items() if k in ("urdu", "urdu_face")]
    if urdu:
        lines += ["", "URDU (natural Urdu talk-show speech, 4 emotions, evaluation only): accuracy of the answered "
                  "label over the 7 classes and of the argmax over its 4 emotions' probabilities; face right / fused "
                  "wrong counts the clips where the face-alone view was right and the fused answer wrong "
                  "(and the reverse).", "",
                  "| kind | n | accuracy (7) | accuracy (4) | UAR | ECE | wrong >0.9 | audio-view acc "
                  "| face-view acc | face right, fused wrong | fused right, face wrong | answered labels |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for kind, s in urdu:
            views = ["–" if s[f"{v}_view_accuracy"] is None else f"{_f(s[f'{v}_view_accuracy'])} ({s[f'{v}_view_n']})"
                     for v in ("audio", "face")]
            answered = ", ".join(f"{k} {v}" for k, v in s["answered"].items())
            lines.append(f"| {kind} | {s.get('n', 0)} | {_f(s.get('accuracy'))} | {_f(s.get('accuracy_4'))} "
                         f"| {_f(s.get('uar'))} | {_f(s.get('ece'))} | {s.get('wrong_confident', '–')} "
                         f"| {views[0]} | {views[1]} | {s.get('face_right_fused_wrong', '–')} "
                         f"| {s.get('fused_right_face_wrong', '–')} | {answered} |")
    cremad = [r for r in records if r["kind"] == "cremad"]
    if cremad:
        lines += ["", "| CREMA-D clip | true | predicted | p(predicted) | p(true) | face | audio view | face view |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in cremad:
            name = Path(r["clip"]).name
            if r["status"] != 200:
                lines.append(f"| {name} | {r['true']} | error {r['status']} {r['error'].get('code')} | | | | | |")
                continue
            p = r["probabilities"]
            bym = r.get("probabilities_by_modality") or {}
            views = [max(bym[v], key=bym[v].get) if bym.get(v) else "–" for v in ("audio", "face")]
            lines.append(f"| {name} | {r['true']} | {r['label']} | {_f(p[r['label']])} | {_f(p.get(r['true']))} "
                         f"| {(r.get('modalities') or {}).get('face')} | {views[0]} | {views[1]} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- main

def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", type=Path, default=REPO / "models" / "default")
    ap.add_argument("--split", choices=SPLITS, default="val",
                    help="val: for development; test: for final figures only")
    ap.add_argument("--limit", type=int, default=None,
                    help="speech clips (RAVDESS and URDU) per emotion (default: all of the split; all of URDU)")
    ap.add_argument("--kinds", default=",".join(DEFAULT_KINDS),
                    help=f"comma-separated, from {','.join(KINDS)} (default: %(default)s)")
    ap.add_argument("--workers", type=int, default=2, help="concurrent requests (and EMOTION_MAX_CONCURRENCY)")
    ap.add_argument("--seed", type=int, default=0,
                    help="pairing and framing seed (which clips, which face for each, which windows and offsets)")
    ap.add_argument("--out", type=Path, default=None, help="JSON results (default bench/results/heldout-SPLIT.json)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="corpora root (../shared/data)")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="generated clips (.cache/served_clips, shared with `trainer build`)")
    ap.add_argument("--request-timeout", type=float, default=300.0, help="client and server per-request timeout, s")
    args = ap.parse_args(argv)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        ap.error(f"--kinds: unknown {bad}; known: {', '.join(KINDS)}")
    if args.workers < 1 or (args.limit is not None and args.limit < 1):
        ap.error("--workers and --limit must be >= 1")
    out = args.out or REPO / "bench" / "results" / f"heldout-{args.split}.json"

    t0, load_at_start = time.perf_counter(), os.getloadavg()
    try:
        speech, faces, cremad = heldout_sources(args.data, args.split)
    except FileNotFoundError as exc:
        raise SystemExit(str(exc)) from None
    pairs = pair_clips(speech, faces, args.seed, args.limit) if {"av", "face", "audio", "framing"} & set(kinds) else []
    urdu_all = urdu_sources(args.data) if {"urdu", "urdu_face"} & set(kinds) else []
    urdu = [u for clips in pick_clips(urdu_all, args.seed, args.limit).values() for u in clips]
    urdu_pairs = pair_clips(urdu_all, faces, args.seed, args.limit) if "urdu_face" in kinds else []
    if {"urdu", "urdu_face"} & set(kinds):
        if not urdu_all:
            print(f"no URDU clips under {args.data}: kinds urdu, urdu_face skipped", file=sys.stderr)
        else:
            print(f"URDU: {len(urdu)} clips ({Counter(u.label for u in urdu)}), {len(urdu_pairs)} with a "
                  f"{args.split} face; all of URDU is test data (evaluation only), whatever --split", file=sys.stderr)
    left_out = sorted({s.label for s in speech} - {p.label for p in pairs})
    if left_out and pairs:
        print(f"no {args.split} faces for {', '.join(left_out)}: those speech clips are left out", file=sys.stderr)
    if "cremad" in kinds and not cremad:
        print(f"no CREMA-D clips under {args.data}: kind cremad skipped", file=sys.stderr)
    print(f"{args.split}: {len(speech)} RAVDESS speech clips, {len(faces)} FER2013 faces; "
          f"{len(pairs)} pairs ({Counter(p.label for p in pairs)})", file=sys.stderr)

    rafdb = ([f for faces_ in pick_clips(rafdb_sources(args.data, args.split), args.seed, args.limit).values()
              for f in faces_] if "rafdb_face" in kinds else [])
    if "rafdb_face" in kinds:
        print(f"RAF-DB: {len(rafdb)} {args.split} faces (the project's carve of its train split)", file=sys.stderr)
    jobs = plan_jobs(kinds, pairs, cremad, args.cache, urdu, urdu_pairs, args.seed, rafdb)
    print(f"building {len(jobs)} clips into {args.cache / RECIPE} (cached)", file=sys.stderr)
    with ThreadPoolExecutor(max(1, min(args.workers, os.cpu_count() or 1))) as pool:
        for job, path in zip(jobs, pool.map(lambda j: j.make(), jobs)):
            job.path = Path(path)
    t_clips = time.perf_counter() - t0

    env = {"EMOTION_MAX_CONCURRENCY": str(args.workers), "EMOTION_MAX_QUEUE": str(2 * args.workers),
           "EMOTION_REQUEST_TIMEOUT_S": str(args.request_timeout), "EMOTION_LOG_LEVEL": "warning"}
    print(f"starting python -m service on {args.model_dir}", file=sys.stderr)
    with ServiceProcess(args.model_dir, env) as svc:
        svc.wait_ready(timeout=300)
        import urllib.request
        with urllib.request.urlopen(svc.url + "/v1/models", timeout=30) as resp:
            models = json.load(resp)
        t1 = time.perf_counter()
        records = run_requests(svc.url, jobs, args.workers, args.request_timeout + 30)
        t_requests = time.perf_counter() - t1

    manifest = json.loads((args.model_dir / "manifest.json").read_text())
    meta = {
        "split": args.split,
        "split_note": {"val": "RAVDESS actors 15-16 + FER2013 train's validation bucket: for development",
                       "test": "RAVDESS actors 17-20 + FER2013 public_test: for final figures only"}[args.split]
        + ("; URDU: all of it, evaluation only" if {"urdu", "urdu_face"} & set(kinds) else ""),
        "model_dir": str(args.model_dir), "model": f"{manifest.get('name')} {manifest.get('version')}, "
                                                    f"created {manifest.get('created')}",
        "calibrated": bool(manifest.get("calibration")), "limit": args.limit, "seed": args.seed,
        "kinds": kinds, "workers": args.workers, "recipe": RECIPE, "git_commit": _git_commit(),
        "clip_recipe": {"frame": f"{FRAME_W}x{FRAME_H} {BACKGROUND}", "face_px": FACE_PX, "fps": FPS,
                        "face_only_s": FACE_ONLY_S, "x264": X264, "aac": AAC},
        "framing": {"recipe": FRAMING_RECIPE, "speech_db": SPEECH_DB, "frame_s": 0.010,
                    "framings": list(FRAMINGS)} if "framing" in kinds else None,
        "load_avg_at_start": load_at_start, "load_avg_at_end": os.getloadavg(),
        "seconds": {"clips": round(t_clips, 1), "requests": round(t_requests, 1)},
        "service_models": models, "ece_bins": ECE_BINS,
    }
    summary = summarise(records, [k for k in kinds if any(r["kind"] == k for r in records)])
    meta["rows"] = list(summary)
    table = markdown(summary, records, meta)
    print(table)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "summary": summary, "records": records}, indent=1))
    print(f"\nwrote {out} ({len(records)} answers; clips {t_clips:.0f} s, requests {t_requests:.0f} s)",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
