"""`emotion-av batch` on a real local Ray cluster (2 CPUs, loopback): the Parquet rows are POST
/predict's answers, bad and hostile files get error rows, a killed actor loses nothing and
doubles nothing, --resume answers only the rest, and s3:// works against a real S3 endpoint
(moto's server on loopback). One Ray cluster for the module (docs/batch.md)."""
from __future__ import annotations

import contextlib
import io
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from conftest import REPO_ROOT, corpus_dir, free_port, running_server
from hostile import HOSTILE_LIMITS, cases

from service.run.processes import descendants_titled

pytest.importorskip("ray", reason="the cluster extra is not installed (scripts/install.sh cpu,dev,cluster)")
pq = pytest.importorskip("pyarrow.parquet")

pytestmark = pytest.mark.slow
BUNDLE = REPO_ROOT / "models" / "default"
# Cheap members of the hostile corpus (tests/hostile.py): not media, torn, playlists, refused
HOSTILE = ("zero_bytes", "random_bytes", "text_renamed_mp4", "header_only_mp4", "hls_playlist_etc_passwd",
           "concat_playlist", "avi_gab2_playlist", "png_image", "aiff_audio")


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    # BLAS threads and the limits the hostile statuses assume: in the driver's environment,
    # which the batch forwards to its actors (service/cluster/batch.py actor_env)
    saved = dict(os.environ)
    os.environ.update(HOSTILE_LIMITS)
    # tests/faultinject in every process of the cluster: opening a file named *poison* crashes
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT / "tests" / "faultinject"),
                                                           os.environ.get("PYTHONPATH")) if p)
    os.environ["EMOTION_FAULT_DECODER_CRASH"] = "poison"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}})
    try:
        yield ray
    finally:
        ray.shutdown()
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="module")
def server():
    with running_server(BUNDLE, env=HOSTILE_LIMITS) as srv:
        yield srv


def real_clips() -> list[Path]:
    """The six CREMA-D clips and three RAVDESS recordings (actor 1, neutral to happy)."""
    ravdess = sorted((corpus_dir("ravdess") / "Actor_01").glob("*.flac"))[:3]
    return sorted(corpus_dir("cremad_av").glob("*.flv")) + ravdess


def post(server, path: Path) -> dict:
    with open(path, "rb") as fh:
        r = httpx.post(server.url + "/predict", params={"timeline": "true"},
                       files={"file": (path.name, fh, "application/octet-stream")}, timeout=180)
    return {"status": r.status_code, **r.json()}


def read_rows(out) -> list[dict]:
    return pq.read_table(out).to_pylist()


def batch(inputs, out, **kw):
    from service.cluster.batch import run_batch

    return run_batch([str(i) for i in inputs], str(out), model_dir=str(BUNDLE), progress=False, **kw)


@pytest.fixture(scope="module")
def archive(ray_cluster, tmp_path_factory):
    """A first run on three clips, then `--resume` on the whole archive: real clips, hostile
    files and a folder of them; (inputs, expected hostile statuses, both summaries, rows)."""
    tmp = tmp_path_factory.mktemp("archive")
    hostile, expected = tmp / "hostile", {}
    hostile.mkdir()
    for case in cases():
        if case.name in HOSTILE:
            d = tmp / "build" / case.name
            d.mkdir(parents=True)
            src = case.build(d)
            dest = hostile / f"{case.name}{src.suffix}"
            shutil.copyfile(src, dest)
            expected[str(dest)] = (case.status, case.code)
    clips, out = real_clips(), tmp / "out.parquet"
    from service.run.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):  # the first run through the command line, on this cluster
        rc = main(["batch", *map(str, clips[:3]), "--out", str(out), "--actors", "2", "--timeline", "--quiet",
                   "--model-dir", str(BUNDLE)])
    first = (rc, err.getvalue())
    exts = "flv,flac,mp4,avi,png,aiff"
    second = batch([*clips, hostile], out, actors=2, timeline=True, resume=True, extensions=exts.split(","))
    return clips, expected, first, second, read_rows(out)


def test_resume_answers_only_the_rest(archive):
    clips, expected, (rc, summary), second, rows = archive
    assert rc == 0 and "3 files in" in summary and "3 answered, 0 failed" in summary, summary
    assert second.skipped == 3 and second.done == len(clips) - 3 + len(expected)
    paths = [r["path"] for r in rows]
    assert sorted(paths) == sorted([str(c) for c in clips] + list(expected)), "every input exactly once"


def test_rows_equal_post_predict(archive, server):
    clips, _, _, _, rows = archive
    by_path = {r["path"]: r for r in rows}
    for clip in clips:
        row, body = by_path[str(clip)], post(server, clip)
        assert row["status"] == body["status"] == 200 and row["error_code"] is None
        assert row["label"] == body["label"]
        for prefix, probs in (("p_", body["probabilities"]),
                              ("p_audio_", body["probabilities_by_modality"].get("audio")),
                              ("p_face_", body["probabilities_by_modality"].get("face"))):
            for c in body["probabilities"]:
                want = probs[c] if probs else None
                got = row[prefix + c]
                assert (got is None) == (want is None), (clip.name, prefix, c)
                if want is not None:
                    assert math.isclose(got, want, abs_tol=1e-6), (clip.name, prefix, c, got, want)
        assert (row["audio"], row["face"]) == (body["modalities"]["audio"], body["modalities"]["face"])
        assert row["duration_s"] == body["duration_s"]
        assert row["summary_frames_s"] == [f["t"] for f in body["summary_frames"]]
        import json
        timeline = json.loads(row["timeline"])
        assert [(s["start_s"], s["label"]) for s in timeline] == [(s["start_s"], s["label"]) for s in body["timeline"]]
    assert {by_path[str(c)]["face"] for c in clips if c.suffix == ".flac"} == {"missing"}


def test_bad_and_hostile_files_get_error_rows(archive):
    _, expected, _, second, rows = archive
    by_path = {r["path"]: r for r in rows}
    for path, (status, code) in expected.items():
        row = by_path[path]
        assert (row["status"], row["error_code"]) == (status, code), row
        assert row["error_message"] and row["label"] is None and row["p_neutral"] is None
    for code in {c for _, c in expected.values()}:
        assert second.failures[code] == sum(1 for _, c in expected.values() if c == code)
    assert "undecodable" in second.text() and "failed" in second.text()


def test_schema_is_documented_and_typed(archive):
    import pyarrow as pa

    table = pq.read_table(archive[3].parts[0])
    assert table.schema.field("status").type == pa.int16()
    assert table.schema.field("summary_frames_s").type == pa.list_(pa.float64())
    doc = (REPO_ROOT / "docs" / "batch.md").read_text()
    for name in ("path", "status", "error_code", "error_message", "label", "p_<class>", "p_audio_<class>",
                 "p_face_<class>", "audio", "face", "duration_s", "summary_frames_s", "timeline"):
        assert f"`{name}`" in doc, name


def _our_map_workers() -> list[int]:
    """Pids of this test's Ray Data actors (Ray titles them MapWorker(...)), descendants of
    this process: another program's Ray processes are never touched."""
    return descendants_titled(b"MapWorker(MapBatches(Scorer))")


def test_an_actor_killed_mid_run_loses_and_doubles_nothing(ray_cluster, tmp_path):
    clips = []
    for n in range(2):  # 12 distinct files: the six CREMA-D clips twice
        for clip in sorted(corpus_dir("cremad_av").glob("*.flv")):
            clips.append(tmp_path / "in" / f"{n}-{clip.name}")
            clips[-1].parent.mkdir(exist_ok=True)
            shutil.copyfile(clip, clips[-1])
    out, killed = tmp_path / "out.parquet", []

    def kill_one() -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not killed:
            parts = list(out.glob("part-*.parquet")) if out.exists() else []
            workers = _our_map_workers()
            if len(parts) >= 2 and workers:  # mid-run: some rows written, more to come
                os.kill(workers[0], signal.SIGKILL)
                killed.append(workers[0])
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one)
    killer.start()
    summary = batch(clips, out, actors=2, batch_size=1, part_rows=1)
    killer.join()
    assert killed, "no actor was killed: the test proved nothing"
    rows = read_rows(out)
    assert sorted(r["path"] for r in rows) == sorted(map(str, clips)), "every input exactly once"
    assert summary.ok == len(clips) and not summary.failures
    assert {r["status"] for r in rows} == {200}


def test_s3_in_and_out_through_a_real_endpoint(ray_cluster, server, tmp_path):
    """Inputs read from, and the Parquet written to, moto's S3 server on loopback."""
    import s3fs

    port = free_port()
    moto = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        options = {"endpoint_url": f"http://127.0.0.1:{port}", "key": "testing", "secret": "testing"}
        fs = s3fs.S3FileSystem(**options)
        deadline = time.monotonic() + 30
        while True:
            try:
                fs.mkdir("archive")
                break
            except Exception:  # noqa: BLE001 - the server is still starting
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        clips = real_clips()[4:8]                                   # two CREMA-D clips, two RAVDESS
        for clip in clips:
            fs.put_file(str(clip), f"archive/in/{clip.name}")
        fs.pipe_file("archive/in/broken.mp4", b"not a video" * 100)
        summary = batch(["s3://archive/in/"], "s3://archive/results.parquet", storage_options=options)
        assert summary.done == 5 and summary.failures == {"undecodable": 1}
        parts = fs.ls("archive/results.parquet")
        assert parts and all(p.endswith(".parquet") for p in parts)
        rows = {}
        for part in parts:
            with fs.open(part, "rb") as f:
                rows.update((r["path"], r) for r in pq.read_table(f).to_pylist())
        assert sorted(rows) == sorted([f"s3://archive/in/{c.name}" for c in clips] + ["s3://archive/in/broken.mp4"])
        for clip in clips:
            row, body = rows[f"s3://archive/in/{clip.name}"], post(server, clip)
            assert row["label"] == body["label"]
            for c, p in body["probabilities"].items():
                assert math.isclose(row[f"p_{c}"], p, abs_tol=1e-6)
        assert rows["s3://archive/in/broken.mp4"]["error_code"] == "undecodable"
    finally:
        moto.terminate()
        moto.wait(timeout=20)


def test_a_file_that_crashes_the_decoder_gets_its_row(ray_cluster, tmp_path):
    """A file on which FFmpeg crashes (injected: SIGSEGV when a *poison* file is opened) costs
    the actor's decoder worker, not the actor: decoder_failed (500), as POST /predict answers."""
    clip = corpus_dir("cremad_av") / "1001_DFA_HAP_XX.flv"
    poison = tmp_path / "poison.flv"
    shutil.copyfile(clip, poison)
    summary = batch([clip, poison], tmp_path / "out.parquet")
    rows = {Path(r["path"]).name: r for r in read_rows(tmp_path / "out.parquet")}
    assert (rows["poison.flv"]["status"], rows["poison.flv"]["error_code"]) == (500, "decoder_failed")
    assert rows[clip.name]["status"] == 200
    assert summary.ok == 1 and summary.failures == {"decoder_failed": 1}


def test_adapt_voice_gives_emotion_av_predicts_adapted_answers(ray_cluster, tmp_path):
    """`--adapt-voice` on the cluster: 24 real RAVDESS recordings of one actor and a file that
    is not media. The actors' first pass gives the same adaptation as the in-process one
    (`Predictor.fit_voice_adaptation`, what `emotion-av predict --adapt-voice` runs): each
    row's probabilities equal the in-process adapted answer, its `adaptation` column says so,
    the bad file still gets its error row; the six CREMA-D clips are too few and the run stops
    with a usage error before writing anything."""
    import json

    from service.api import Predictor
    from service.run.records import UsageError

    folder = tmp_path / "actor"
    folder.mkdir()
    for f in sorted((corpus_dir("ravdess") / "Actor_01").glob("*.flac"))[:24]:
        (folder / f.name).symlink_to(f)
    (folder / "notes.wav").write_bytes(b"not a recording")
    out = tmp_path / "out.parquet"
    summary = batch([folder], out, actors=2, adapt_voice=True)
    assert summary.ok == 24 and summary.failures == {"undecodable": 1}, summary.text()
    rows = {r["path"]: r for r in read_rows(out)}

    predictor = Predictor(BUNDLE, threads=1)
    voices = sorted(str(p) for p in folder.glob("*.flac"))
    adaptation = predictor.fit_voice_adaptation(voices + [str(folder / "notes.wav")])
    assert adaptation.n_clips == 24
    for path in voices:
        want = predictor.predict(Path(path), voice_adaptation=adaptation)
        row = rows[path]
        assert json.loads(row["adaptation"])["voice"]["n_clips"] == 24
        for c, p in want["probabilities"].items():
            assert math.isclose(row[f"p_{c}"], p, abs_tol=1e-5), (path, c)
    assert rows[str(folder / "notes.wav")]["adaptation"] is None

    plain = predictor.predict(Path(voices[0]))
    assert plain["adaptation"] is None
    assert max(abs(plain["probabilities"][c] - rows[voices[0]][f"p_{c}"]) for c in plain["probabilities"]) > 1e-3

    with pytest.raises(UsageError, match="at least"):
        batch([corpus_dir("cremad_av")], tmp_path / "few.parquet", adapt_voice=True)
    assert not (tmp_path / "few.parquet").exists()
