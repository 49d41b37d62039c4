"""Faults of the host, injected under a real server: the spool volume full while an upload
streams, a decoder worker killed mid-decode or hung, the service SIGKILLed mid-upload, ONNX
Runtime failing in a request. Each gets its documented status and code and leaves no spool
file, no stray child process (the decoder pool back to its size, a dead worker replaced) and
no open descriptor behind (read from /proc).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from conftest import REPO_ROOT, Server, running_server
from media import make_video

pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parent


def check_error(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert err["code"] == code, err
    assert err["request_id"] == r.headers["x-request-id"] and err["message"]
    assert "Traceback" not in r.text and "/proc" not in r.text and "/tmp" not in r.text


def settle(srv: Server, fds: int | None = None, wait_s: float = 10.0) -> None:
    """Nothing left behind: no spool entry, no child (zombies included), and the descriptors
    back to `fds` (connections close a moment after the answer: poll)."""
    deadline = time.monotonic() + wait_s
    while True:
        spool, children = sorted(os.listdir(srv.spool())), srv.children()
        now = srv.fds()
        if not spool and not children and (fds is None or now <= fds):
            return
        if time.monotonic() > deadline:
            pytest.fail(f"left behind: spool {spool}, children {children}, fds {now} (idle {fds})")
        time.sleep(0.05)


def post_file(srv: Server, path: Path, timeout: float = 60) -> httpx.Response:
    with open(path, "rb") as fh:
        return httpx.post(srv.url + "/predict", files={"file": (path.name, fh, "video/mp4")}, timeout=timeout)


def idle_fds(srv: Server, clip: Path) -> int:
    """Descriptors of the server once warm and idle (one request served: every lazily opened
    file is open)."""
    assert post_file(srv, clip).status_code == 200
    settle(srv)
    time.sleep(0.3)
    return srv.fds()


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("fault-clips")
    return {
        "short": make_video(d / "short.mp4", seconds=1, size="160x120"),
        "long": make_video(d / "long.mp4", seconds=12, size="160x120"),
        "big": d / "big.bin",
    }


# ------------------------------------------------------------------ spool volume full

def _tmpfs_wrap(mountpoint: Path, size: str) -> list[str] | None:
    """A private mount namespace with a small tmpfs on `mountpoint` for the server (and only
    for it): unprivileged where user namespaces are allowed, else as root. None: unavailable."""
    if shutil.which("unshare") is None:
        return None
    script = 'mount -t tmpfs -o size="$1" tmpfs "$0" && shift && exec "$@"'
    for userns in (["--user", "--map-root-user"], []):
        wrap = ["unshare", *userns, "--mount", "sh", "-c", script, str(mountpoint), size]
        if subprocess.run([*wrap, "true"], capture_output=True).returncode == 0:
            return wrap
    return None


def _fsize_limit(limit: int) -> list[str]:
    """The other way to fill a volume: RLIMIT_FSIZE (writes past it fail with EFBIG, which
    Python turns into an OSError because it ignores SIGXFSZ)."""
    code = (f"import os, resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit})); "
            "os.execv(sys.argv[1], sys.argv[1:])")
    return [sys.executable, "-c", code]


@pytest.mark.parametrize("how", ["tmpfs", "rlimit_fsize"])
def test_spool_volume_full_is_507_and_leaves_nothing(quick_bundle, clips, tmp_path, how):
    spool = tmp_path / "spool"
    spool.mkdir()
    if how == "tmpfs":
        wrap = _tmpfs_wrap(spool, "2m")
        if wrap is None:
            pytest.skip("cannot mount a tmpfs here (no unshare, no user namespaces, not root)")
    else:
        wrap = _fsize_limit(2 * 2**20)
    clips["big"].write_bytes(os.urandom(3 * 2**20))   # 3 MiB: under the 4 MiB upload limit
    env = {"EMOTION_TMP_DIR": str(spool), "EMOTION_MAX_UPLOAD_MB": "4"}
    with running_server(quick_bundle, env, wrap) as srv:
        fds = idle_fds(srv, clips["short"])
        for _ in range(3):   # again and again: each one cleans up after itself
            r = post_file(srv, clips["big"])
            check_error(r, 507, "spool_full")
            assert r.headers["retry-after"]
            settle(srv, fds)
        # the space came back: the next upload that fits is served
        assert post_file(srv, clips["short"]).status_code == 200
        settle(srv, fds)
        assert '"level": "error"' not in srv.logs()


# ------------------------------------------------------------------ decoder workers killed or hung

FAULTS = TESTS / "faultinject"


def _fault_env(**triggers: Path) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join([str(FAULTS), os.environ.get("PYTHONPATH", ""), str(REPO_ROOT)]),
            **{name: str(path) for name, path in triggers.items()}}


def settle_workers(srv: Server, workers: int, fds: int | None = None, wait_s: float = 20.0) -> list[int]:
    """`settle`, and the decoder pool back to `workers` live workers (a killed one replaced,
    not leaked); returns their pids."""
    settle(srv, fds, wait_s)
    deadline = time.monotonic() + wait_s
    while len(pids := srv.decoder_workers()) != workers:
        if time.monotonic() > deadline:
            pytest.fail(f"decoder workers {pids}, expected {workers}")
        time.sleep(0.05)
    return pids


@pytest.fixture(scope="module")
def faulty_decoder_server(quick_bundle, tmp_path_factory):
    """One decoder worker, whose demux pass is slowed (20 ms a packet: a 12 s clip takes
    seconds) while the `slow` trigger file exists, or whose opening of a file hangs while
    the `hang` trigger exists."""
    d = tmp_path_factory.mktemp("decoder-faults")
    slow, hang = d / "slow", d / "hang"
    env = {**_fault_env(EMOTION_FAULT_DECODER_SLOW=slow, EMOTION_FAULT_DECODER_HANG=hang),
           "EMOTION_DECODE_WORKERS": "1", "EMOTION_DECODE_TIMEOUT_S": "3"}
    with running_server(quick_bundle, env) as srv:
        srv.slow, srv.hang = slow, hang
        yield srv


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSEGV, signal.SIGTERM])
def test_decoder_worker_killed_mid_decode(faulty_decoder_server, clips, sig):
    srv = faulty_decoder_server
    fds = idle_fds(srv, clips["short"])
    [worker] = settle_workers(srv, 1, fds)
    busy = Path(str(srv.slow) + ".busy")
    busy.unlink(missing_ok=True)
    srv.slow.write_text("")
    result: dict[str, httpx.Response] = {}
    t = threading.Thread(target=lambda: result.update(r=post_file(srv, clips["long"])))
    try:
        t.start()
        deadline = time.monotonic() + 20
        while not busy.exists() or not busy.read_text():
            assert time.monotonic() < deadline, "the worker never started decoding"
            time.sleep(0.02)
        assert int(busy.read_text()) == worker
        time.sleep(0.3)                  # mid-decode: frames and audio are streaming back
        os.kill(worker, sig)
        t.join(60)
    finally:
        srv.slow.unlink(missing_ok=True)
    # a crash of ours, not a bad file: never `undecodable`
    check_error(result["r"], 500, "decoder_failed")
    [replacement] = settle_workers(srv, 1, fds)   # reaped and replaced, pipes closed
    assert replacement != worker
    assert post_file(srv, clips["short"]).status_code == 200
    settle_workers(srv, 1, fds)


def test_decoder_worker_hung_is_504_and_replaced(faulty_decoder_server, clips):
    srv = faulty_decoder_server
    fds = idle_fds(srv, clips["short"])
    [worker] = settle_workers(srv, 1, fds)
    srv.hang.write_text("")
    try:
        start = time.monotonic()
        r = post_file(srv, clips["short"])
        check_error(r, 504, "decode_timeout")
        assert time.monotonic() - start < 10     # EMOTION_DECODE_TIMEOUT_S=3
    finally:
        srv.hang.unlink(missing_ok=True)
    [replacement] = settle_workers(srv, 1, fds)
    assert replacement != worker
    assert post_file(srv, clips["short"]).status_code == 200
    settle_workers(srv, 1, fds)
    assert '"level": "error"' not in srv.logs()


# ------------------------------------------------------------------ the service SIGKILLed mid-upload

def test_sigkill_mid_upload_then_restart_removes_only_its_stale_spool(quick_bundle, tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir()
    # Neighbours that are not a dead instance's leftovers: they must survive the clean-up.
    me = Path(f"/proc/{os.getpid()}/stat").read_text()
    my_ticks = me[me.rindex(")") + 2:].split()[19]
    keep = [spool / f"emotion-{os.getpid()}.{my_ticks}-live1234",  # a live instance's request
            spool / "emotion-not-ours", spool / "emotion-abc", spool / "other-app-123"]
    for d in keep:
        d.mkdir()
    (spool / "notes.txt").write_text("x")
    env = {"EMOTION_TMP_DIR": str(spool)}

    first = Server(quick_bundle, env)
    try:
        first.wait_ready()
        pid = first.proc.pid
        socks = []
        for i in range(2):   # two uploads in flight, half sent
            s = socket.create_connection(("127.0.0.1", first.port))
            head = (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                    b"Content-Length: 1000000\r\n\r\n--b\r\nContent-Disposition: form-data; name=\"file\"; "
                    b"filename=\"a.mp4\"\r\n\r\n")
            s.sendall(head + b"\0" * 200_000)
            socks.append(s)
        deadline = time.monotonic() + 20
        while len([d for d in spool.iterdir() if d.name.startswith(f"emotion-{pid}.")]) < 2:
            assert time.monotonic() < deadline, list(spool.iterdir())
            time.sleep(0.05)
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)
        for s in socks:
            s.close()
    finally:
        first.stop()
    stale = [d for d in spool.iterdir() if d.name.startswith(f"emotion-{pid}.")]
    assert len(stale) == 2 and any(f.stat().st_size > 0 for d in stale for f in d.iterdir())

    with running_server(quick_bundle, env) as second:
        assert sorted(p.name for p in spool.iterdir()) == sorted([*(d.name for d in keep), "notes.txt"])
        lines = [line for line in second.logs().splitlines() if "stale spool" in line]
        assert lines and '"stale_spool_dirs_removed": 2' in lines[0], second.logs()[-2000:]
        assert httpx.get(second.url + "/readyz").status_code == 200
    for d in keep:
        d.rmdir()


# ------------------------------------------------------------------ ONNX Runtime failing in a request

def test_onnx_runtime_failure_is_500_with_request_id_and_the_server_recovers(quick_bundle, clips, tmp_path):
    trigger = tmp_path / "fail-ort"
    env = _fault_env(EMOTION_FAULT_ORT_TRIGGER=trigger)
    with running_server(quick_bundle, env) as srv:
        fds = idle_fds(srv, clips["short"])
        trigger.write_text("")
        r = httpx.post(srv.url + "/predict", files={"file": ("a.mp4", clips["short"].read_bytes(), "video/mp4")},
                       headers={"X-Request-ID": "ort-fault-1"}, timeout=60)
        check_error(r, 500, "inference_failed")
        assert r.json()["error"]["request_id"] == "ort-fault-1"
        assert "injected" not in r.text                       # ORT's message stays in the log
        logged = [line for line in srv.logs().splitlines() if "ort-fault-1" in line and '"level": "error"' in line]
        assert logged and "injected fault" in logged[0]
        settle(srv, fds)
        trigger.unlink()
        for _ in range(2):
            assert post_file(srv, clips["short"]).status_code == 200
        assert httpx.get(srv.url + "/readyz").status_code == 200
        settle(srv, fds)



# ------------------------------------------------------------------ which spool directories are stale

def test_stale_spool_rules(tmp_path):
    """Only `emotion-<pid>.<start>-*` directories of this user whose process is gone (or whose
    pid now names another process: a different start time) are stale."""
    from service.http import spool

    dead = subprocess.Popen(["true"])
    dead.wait()
    mine = spool.instance_tag()
    pid, ticks = mine.split(".")
    cases = {
        f"emotion-{dead.pid}.12345-abc": True,                   # its process is gone
        f"emotion-{pid}.{int(ticks) + 1}-abc": True,             # the pid was reused by another process
        f"emotion-{mine}-abc": False,                            # a live instance (this one)
        "emotion-abc123": False,                                 # the old mkdtemp names: not provably ours
        f"emotion-{dead.pid}.1": False,                          # not the full pattern
        f"other-{dead.pid}.1-abc": False,
    }
    for name in cases:
        (tmp_path / name).mkdir()
    (tmp_path / f"emotion-{dead.pid}.1-file").write_text("a file, not a spool directory")
    (tmp_path / f"emotion-{dead.pid}.2-link").symlink_to(tmp_path / "emotion-abc123")
    assert spool.remove_stale(tmp_path) == 2
    for name, stale in cases.items():
        assert (tmp_path / name).exists() != stale, name
    assert (tmp_path / f"emotion-{dead.pid}.1-file").exists() and (tmp_path / f"emotion-{dead.pid}.2-link").exists()
    made = spool.new_dir(tmp_path)
    assert made.name.startswith(f"emotion-{mine}-") and spool.remove_stale(tmp_path) == 0 and made.exists()
