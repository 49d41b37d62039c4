"""`emotion-av predict` and the Python API: the same answers and error codes as POST /predict."""
from __future__ import annotations

import fcntl
import json
import math
import os
import pty
import select
import shutil
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
import tomllib
from collections import Counter
from pathlib import Path

import httpx
import pytest
from conftest import REPO_ROOT, VOICED, corpus_dir
from hostile import HOSTILE_LIMITS, cases
from media import need_ffmpeg

pytestmark = pytest.mark.slow

CREMAD = ["ANG", "DIS", "FEA", "HAP", "NEU", "SAD"]


def cli_command() -> list[str]:
    """The installed `emotion-av` script beside this Python, else the module it runs."""
    script = Path(sys.executable).with_name("emotion-av")
    return [str(script)] if script.exists() else [sys.executable, "-m", "service.run.cli"]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def post(server, path: Path) -> httpx.Response:
    with open(path, "rb") as fh:
        return httpx.post(server.url + "/predict", files={"file": (path.name, fh, "application/octet-stream")},
                          timeout=180)


def test_script_is_declared():
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["emotion-av"] == "service.run.cli:main"


def test_folder_of_real_clips_equals_post_predict(server, quick_bundle, tmp_path):
    """`emotion-av predict cremad_av --out r.jsonl` on a terminal: a progress bar, 6 lines, and
    each line's answer is POST /predict's for the same file."""
    folder = corpus_dir("cremad_av")
    out = tmp_path / "r.jsonl"
    master, slave = pty.openpty()  # stderr is a terminal: the progress bar shows
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 100 columns
    proc = subprocess.Popen([*cli_command(), "predict", str(folder), "--out", str(out),
                             "--model-dir", str(quick_bundle)],
                            cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    terminal = bytearray()

    def drain() -> None:
        while True:
            try:
                ready, _, _ = select.select([master], [], [], 1)
                if ready:
                    data = os.read(master, 65536)
                    if not data:
                        return
                    terminal.extend(data)
                elif proc.poll() is not None:
                    return
            except OSError:
                return

    reader = threading.Thread(target=drain)
    reader.start()
    assert proc.wait(timeout=600) == 0, terminal.decode(errors="replace")[-3000:]
    reader.join(timeout=10)
    os.close(master)
    screen = terminal.decode(errors="replace")
    assert "6/6" in screen and "100%" in screen, screen[-2000:]          # tqdm's bar
    assert "6 files in" in screen and "6 answered, 0 failed" in screen    # the summary

    lines = read_jsonl(out)
    assert sorted(Path(r["path"]).name for r in lines) == [f"1001_DFA_{e}_XX.flv" for e in CREMAD]
    for record in lines:
        r = post(server, Path(record["path"]))
        assert r.status_code == 200, r.text
        body = r.json()
        assert record["status"] == 200
        assert record["label"] == body["label"]
        assert record["probabilities"] == body["probabilities"], "not the same numbers as POST /predict"
        for key in ("modalities", "summary_frames", "duration_s", "model"):
            assert record[key] == body[key], key
        assert set(record) - {"path", "status"} == set(body)


def test_python_api_equals_cli_and_takes_bytes(quick_bundle, tmp_path):
    from service.api import MediaError, Predictor

    clip = corpus_dir("cremad_av") / "1001_DFA_HAP_XX.flv"
    predictor = Predictor(quick_bundle)
    by_path = predictor.predict(clip)
    by_bytes = predictor.predict(clip.read_bytes(), filename=clip.name)
    with open(clip, "rb") as fh:
        by_file = predictor.predict(fh)
    for other in (by_bytes, by_file):
        assert other["label"] == by_path["label"] and other["probabilities"] == by_path["probabilities"]
    assert math.isclose(sum(by_path["probabilities"].values()), 1.0, abs_tol=1e-9)
    with pytest.raises(MediaError) as err:
        predictor.predict(b"not a video at all" * 100)
    assert (err.value.code, err.value.status) == ("undecodable", 400)
    with pytest.raises(MediaError) as err:
        predictor.predict(b"")
    assert (err.value.code, err.value.status) == ("empty_file", 400)
    outcomes = list(predictor.predict_many([clip, tmp_path / "missing.mp4"], workers=2))
    assert {Path(o.path).name: (o.ok, o.error and o.error["code"]) for o in outcomes} == {
        clip.name: (True, None), "missing.mp4": (False, "unreadable_file")}


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory) -> tuple[Path, dict[str, tuple[int, str | None]]]:
    """200 files cycled from the hostile corpus (tests/hostile.py): valid, broken, refused,
    in nested folders; each file's expected status and error code."""
    need_ffmpeg()
    root = tmp_path_factory.mktemp("mixed")
    work = tmp_path_factory.mktemp("build")
    built = []
    for i, case in enumerate(cases()):
        d = work / f"{i:02d}"
        d.mkdir()
        built.append((case, case.build(d)))
    folder = root / "clips"
    expected = {}
    for n in range(200):
        case, src = built[n % len(built)]
        dest = folder / f"part{n % 3}" / f"{n:03d}-{case.name}{src.suffix}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        expected[str(dest)] = (case.status, case.code)
    return folder, expected


def _ext_arg(expected) -> str:
    return ",".join(sorted({Path(p).suffix.lstrip(".") for p in expected}))


def _check_mixed(lines: list[dict], expected: dict) -> None:
    assert sorted(r["path"] for r in lines) == sorted(expected), "every file exactly one line"
    for r in lines:
        status, code = expected[r["path"]]
        assert r["status"] == status, (r["path"], r)
        if code:
            assert r["error"]["code"] == code, (r["path"], r)
        else:
            assert math.isclose(sum(r["probabilities"].values()), 1.0, abs_tol=1e-6)


def test_200_mixed_files_every_one_gets_a_line(quick_bundle, mixed_folder, tmp_path, monkeypatch, capsys):
    """One run over 200 files: each has its line, the broken ones with the HTTP API's error code
    (the statuses tests/hostile.py expects of the service), and the batch never stops."""
    from service.run.cli import main

    folder, expected = mixed_folder
    for key, value in HOSTILE_LIMITS.items():  # the limits those statuses assume
        monkeypatch.setenv(key, value)
    out = tmp_path / "mixed.jsonl"
    rc = main(["predict", str(folder), "--out", str(out), "--model-dir", str(quick_bundle), "--workers", "2",
               "--ext", _ext_arg(expected)])
    lines = read_jsonl(out)
    assert any("error" in r for r in lines) and rc == 1   # the hostile files failed: done, exit 1
    _check_mixed(lines, expected)
    summary = capsys.readouterr().err
    failed = Counter(r["error"]["code"] for r in lines if "error" in r)
    assert "200 files in" in summary
    assert f"{200 - sum(failed.values())} answered, {sum(failed.values())} failed" in summary
    for code, n in failed.items():
        assert f"  {code}: {n}" in summary


def test_csv_output_and_resume_after_a_torn_line(quick_bundle, tmp_path, capsys):
    """CSV with one row per file; --resume skips what is there, mends a half-written last
    line (a kill, not Ctrl-C, can leave one) and refuses another run's columns."""
    from service.run.cli import CsvWriter, main

    folder = corpus_dir("cremad_av")
    clips = sorted(folder.glob("*.flv"))
    out = tmp_path / "r.csv"
    assert main(["predict", str(clips[0]), str(clips[1]), "--out", str(out), "--model-dir", str(quick_bundle)]) == 0
    assert main(["predict", str(clips[0]), "--out", str(out), "--model-dir", str(quick_bundle)]) == 2
    assert "--resume" in capsys.readouterr().err                      # never overwritten by accident
    with open(out, "a") as f:
        f.write(f"{clips[2]},200,,,hap")                             # a torn row
    assert main(["predict", str(folder), "--out", str(out), "--resume", "--model-dir", str(quick_bundle)]) == 0
    err = capsys.readouterr().err
    assert "4 files in" in err and "2 skipped" in err
    import csv
    rows = list(csv.DictReader(out.open()))
    assert sorted(Path(r["path"]).name for r in rows) == sorted(c.name for c in clips)
    from service.api import Predictor
    classes = Predictor(quick_bundle).classes
    assert list(rows[0]) == CsvWriter.header(classes, False)
    for r in rows:
        p = {c: float(r[f"p_{c}"]) for c in classes}
        assert r["label"] == max(p, key=p.get) and math.isclose(sum(p.values()), 1.0, abs_tol=1e-9)
        assert r["status"] == "200" and r["error_code"] == "" and r["audio"] in VOICED
    assert main(["predict", str(folder), "--out", str(out), "--resume", "--timeline",
                 "--model-dir", str(quick_bundle)]) == 2                  # other columns: refused


def test_ctrl_c_leaves_a_valid_file_and_resume_finishes(quick_bundle, mixed_folder, tmp_path):
    """SIGINT in the middle of a batch: exit 130, every line whole, and --resume does the rest
    without doing a file twice."""
    folder, expected = mixed_folder
    sub = expected      # all 200: enough work that the interrupt lands mid-batch on a fast machine too
    out = tmp_path / "r.jsonl"
    env = {**os.environ, **HOSTILE_LIMITS}
    cmd = [*cli_command(), "predict", str(folder), "--out", str(out), "--model-dir", str(quick_bundle),
           "--ext", _ext_arg(expected), "--workers", "1"]
    # SIGINT back to its default in the child: a test run started in the background (`cmd &`, as
    # CI may be) inherits SIGINT ignored, and Python then keeps ignoring it, as a terminal never does.
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and (not out.exists() or out.read_text().count("\n") < 5):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole group, ffmpeg included
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err and "--resume" in err
    text = out.read_text()
    assert text.endswith("\n")
    first = [json.loads(line) for line in text.splitlines()]
    assert 5 <= len(first) < len(sub)
    rc = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True, timeout=900)
    # the folder holds hostile files, so a finished batch exits 1 ("done, some files failed"), not 0
    assert rc.returncode == 1 and "answered" in rc.stderr, rc.stderr[-2000:]
    _check_mixed(read_jsonl(out), sub)


def test_no_tensorflow_in_the_cli_process():
    code = ("import sys, service.api, service.run.cli, service.http.demo; "
            "bad = [m for m in ('tensorflow', 'keras', 'tf2onnx') if m in sys.modules]; sys.exit(1 if bad else 0)")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT).returncode == 0


def test_walk_is_recursive_by_extension_and_sorted(tmp_path):
    from service.run.cli import walk

    for name in ("b/2.MP4", "b/1.wav", "a/x.flv", "a/deep/er/y.webm", "notes.txt", "a/z.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    got = [os.path.relpath(p, tmp_path) for p in walk([str(tmp_path), str(tmp_path / "notes.txt")],
                                                      ["mp4", "flv", "webm", "wav"])]
    assert got == ["a/x.flv", "a/deep/er/y.webm", "b/1.wav", "b/2.MP4", "notes.txt"]  # a file given is taken


def test_repair_tail_cuts_a_half_written_line(tmp_path):
    from service.run.cli import _repair_tail

    out = tmp_path / "r.jsonl"
    out.write_text('{"path": "a"}\n{"path": "b"}\n{"pa')
    _repair_tail(out)
    assert out.read_text() == '{"path": "a"}\n{"path": "b"}\n'
    out.write_text('{"pa')
    _repair_tail(out)
    assert out.read_text() == ""
