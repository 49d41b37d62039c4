"""Deployment, checked without a Docker engine (design §6).

- docker-compose.yml against the compose specification (the JSON schema vendored in
  check-jsonschema, offline) and against what the deployment promises: GPU reservation,
  read-only root with a tmpfs big enough for the upload settings, healthcheck on /readyz,
  limits, a CPU variant, replicas behind nginx enforcing the same body-size limit.
- Both Dockerfiles linted by hadolint, and installing only through scripts/install.sh with
  the extras CI tests (no TensorFlow in the images).
- The service started the way the container starts it: `python -m service` with the image's
  and the compose file's settings, a read-only model directory, only a "tmpfs" directory
  writable (as an unprivileged user when the tests run as root), the numba cache baked by
  the image's build step, answering a real CREMA-D clip.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from conftest import REPO_ROOT, VOICED, Server, corpus_dir, free_port, running_server

COMPOSE = REPO_ROOT / "docker-compose.yml"
DOCKERFILES = {"cpu": REPO_ROOT / "docker" / "Dockerfile", "gpu": REPO_ROOT / "docker" / "Dockerfile.gpu"}
NGINX_CONF = REPO_ROOT / "docker" / "nginx.conf"
GPU_SERVICES = ("emotion", "emotion-replica")
CPU_SERVICE = "emotion-cpu"
SERVICES = (*GPU_SERVICES, CPU_SERVICE)
PROXY, REPLICA = "proxy", "emotion-replica"
MIB = 1024 * 1024


def bin_tool(name: str) -> str:
    """A tool installed by the dev extra into the running virtualenv (fails if missing)."""
    path = Path(sys.executable).parent / name
    found = str(path) if path.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed: scripts/install.sh cpu,train,dev (the dev extra pins it)")
    return found


def load_compose(text: str | None = None) -> dict:
    from ruamel.yaml import YAML  # check-jsonschema's YAML loader (resolves the << merges)

    return json.loads(json.dumps(YAML(typ="safe").load(text if text is not None else COMPOSE.read_text())))


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_compose()


# --- the compose specification ------------------------------------------------------------

def compose_schema() -> dict:
    import check_jsonschema

    path = Path(check_jsonschema.__file__).parent / "builtin_schemas" / "vendor" / "compose-spec.json"
    assert path.is_file(), f"check-jsonschema no longer vendors the compose schema at {path}"
    return json.loads(path.read_text())


def schema_errors(doc: dict) -> list[str]:
    import jsonschema

    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    return sorted(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc))


def test_compose_file_is_valid_against_the_vendored_compose_spec():
    proc = subprocess.run([bin_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert schema_errors(load_compose()) == []


@pytest.mark.parametrize("mutate,expected", [
    (lambda d: d["services"]["emotion"].update(gpus_please=True), "Unevaluated properties"),
    (lambda d: d["services"]["emotion"]["deploy"]["resources"]["reservations"]["devices"][0].update(
        capabilities="gpu"), "is not of type 'array'"),
    (lambda d: d["services"]["emotion"].update(read_only=["yes"]), "is not of type"),
])
def test_compose_schema_catches_broken_files(compose, mutate, expected):
    doc = copy.deepcopy(compose)
    mutate(doc)
    errors = schema_errors(doc)
    assert any(expected in e for e in errors), errors


# --- what the deployment promises -----------------------------------------------------------

_INTERPOLATION = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def interpolate(value: object) -> str:
    """Compose's `${VAR:-default}` with the defaults (what runs when nothing is set)."""
    return _INTERPOLATION.sub(lambda m: m.group(2) or "", str(value))


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: interpolate(v) for k, v in env.items()}


def size_bytes(text: str) -> int:
    m = re.fullmatch(r"(\d+)([kmg]?)b?", str(text).strip().lower())
    assert m, f"unreadable size {text!r}"
    return int(m.group(1)) * {"": 1, "k": 1024, "m": MIB, "g": 1024 * MIB}[m.group(2)]


def tmpfs_mounts(service: dict) -> dict[str, int]:
    """tmpfs target -> size in bytes (0: no size limit)."""
    mounts = {}
    for entry in service.get("tmpfs") or []:
        target, _, options = entry.partition(":")
        opts = dict(o.split("=", 1) if "=" in o else (o, "") for o in options.split(",") if o)
        mounts[target] = size_bytes(opts["size"]) if "size" in opts else 0
    for vol in service.get("volumes") or []:
        if isinstance(vol, dict) and vol.get("type") == "tmpfs":
            mounts[vol["target"]] = int((vol.get("tmpfs") or {}).get("size", 0))
    return mounts


def settings_fields() -> set[str]:
    from service.settings import Settings

    return {f"EMOTION_{name.upper()}" for name in Settings.model_fields}


def service_problems(name: str, svc: dict) -> list[str]:
    problems = []
    env = environment(svc)
    unknown = sorted(k for k in env if k.startswith("EMOTION_") and k not in settings_fields())
    if unknown:
        problems.append(f"{name}: unknown settings {unknown}")
    if svc.get("read_only") is not True:
        problems.append(f"{name}: root filesystem not read-only")
    tmpfs = tmpfs_mounts(svc)
    writable = [t for t in tmpfs if all(env.get(k, "").startswith(t + "/") for k in ("EMOTION_TMP_DIR", "NUMBA_CACHE_DIR"))]
    if not writable:
        problems.append(f"{name}: EMOTION_TMP_DIR and NUMBA_CACHE_DIR are not on a tmpfs")
    else:
        need = (int(env.get("EMOTION_MAX_CONCURRENCY", 2)) + int(env.get("EMOTION_MAX_QUEUE", 8))) \
            * float(env.get("EMOTION_MAX_UPLOAD_MB", 100)) * MIB
        size = tmpfs[writable[0]]
        if not size or size < need:
            problems.append(f"{name}: tmpfs {writable[0]} ({size} B) smaller than the uploads it must hold ({need:.0f} B)")
    health = svc.get("healthcheck") or {}
    test = " ".join(health.get("test") or [])
    if "service.run.probe" not in test and "/readyz" not in test:
        problems.append(f"{name}: no healthcheck on /readyz")
    if svc.get("restart") not in ("always", "unless-stopped", "on-failure"):
        problems.append(f"{name}: no restart policy")
    user = str(svc.get("user", "")).split(":")[0]
    if user in ("", "0", "root"):
        problems.append(f"{name}: runs as root")
    limits = ((svc.get("deploy") or {}).get("resources") or {}).get("limits") or {}
    if not limits.get("cpus") or not limits.get("memory"):
        problems.append(f"{name}: no CPU/memory limits")
    else:
        if writable and size_bytes(limits["memory"]) < tmpfs[writable[0]] + 2 * 1024 * MIB:
            problems.append(f"{name}: memory limit leaves < 2 GiB beside the tmpfs (tmpfs counts as memory)")
        threads = int(env.get("EMOTION_ORT_THREADS", 0))
        if not threads or threads * int(env.get("EMOTION_MAX_CONCURRENCY", 2)) > float(limits["cpus"]):
            problems.append(f"{name}: EMOTION_ORT_THREADS x EMOTION_MAX_CONCURRENCY exceeds the CPU limit")
    if not any(isinstance(v, dict) and v.get("target") == "/bundles" and v.get("read_only")
               for v in svc.get("volumes") or []):
        problems.append(f"{name}: no read-only bundle volume")
    devices = ((svc.get("deploy") or {}).get("resources") or {}).get("reservations", {}).get("devices") or []
    gpu = [d for d in devices if d.get("driver") == "nvidia" and "gpu" in (d.get("capabilities") or [])
           and (d.get("count") == 1 or len(d.get("device_ids") or []) == 1)]
    providers = [p.strip() for p in env.get("EMOTION_PROVIDERS", "").split(",") if p.strip()]
    dockerfile = (svc.get("build") or {}).get("dockerfile", "")
    if dockerfile and (REPO_ROOT / dockerfile).is_file():
        baked = image_env(REPO_ROOT / dockerfile, upto_check=True).get("NUMBA_CACHE_DIR")
        seed = env.get("EMOTION_NUMBA_CACHE_SEED", image_env(REPO_ROOT / dockerfile).get("EMOTION_NUMBA_CACHE_SEED"))
        if seed != baked:
            problems.append(f"{name}: EMOTION_NUMBA_CACHE_SEED {seed} is not the image's baked cache {baked}")
    if name in GPU_SERVICES:
        if not gpu:
            problems.append(f"{name}: no reservation of one NVIDIA GPU")
        if providers[:1] != ["CUDAExecutionProvider"] or "CPUExecutionProvider" not in providers:
            problems.append(f"{name}: providers should be CUDA first, CPU fallback: {providers}")
        if dockerfile != "docker/Dockerfile.gpu":
            problems.append(f"{name}: not built from docker/Dockerfile.gpu")
    else:
        if devices:
            problems.append(f"{name}: the CPU variant reserves devices")
        if providers != ["CPUExecutionProvider"] or dockerfile != "docker/Dockerfile":
            problems.append(f"{name}: the CPU variant should use docker/Dockerfile and the CPU provider")
        if not svc.get("profiles"):
            problems.append(f"{name}: the CPU variant should sit behind a profile")
    return problems


def deployment_problems(doc: dict) -> list[str]:
    services = doc.get("services", {})
    problems = [f"missing service {s}" for s in (*SERVICES, PROXY) if s not in services]
    for name in SERVICES:
        if name in services:
            problems += service_problems(name, services[name])
    replica, proxy = services.get(REPLICA, {}), services.get(PROXY, {})
    if replica.get("ports"):
        problems.append("replicas must not publish ports (the proxy does)")
    if (proxy.get("depends_on") or {}).get(REPLICA, {}).get("condition") != "service_healthy":
        problems.append("the proxy should wait for healthy replicas")
    if not any(isinstance(v, dict) and v.get("source", "").endswith("docker/nginx.conf") and v.get("read_only")
               for v in proxy.get("volumes") or []):
        problems.append("the proxy does not mount docker/nginx.conf read-only")
    if set(proxy.get("profiles") or []) != set(replica.get("profiles") or []):
        problems.append("the proxy and the replicas should share one profile")
    return problems


def test_compose_file_keeps_the_deployment_promises(compose):
    assert deployment_problems(compose) == []


def _without_gpu(d):
    del d["services"]["emotion"]["deploy"]["resources"]["reservations"]


def _set_env(service, key, value):
    def mutate(d):
        d["services"][service]["environment"][key] = value
    return mutate


@pytest.mark.parametrize("mutate,expected", [
    (_without_gpu, "emotion: no reservation of one NVIDIA GPU"),
    (lambda d: d["services"]["emotion-replica"]["deploy"]["resources"]["reservations"]["devices"][0].update(
        capabilities=["utility"]), "emotion-replica: no reservation of one NVIDIA GPU"),
    (lambda d: d["services"]["emotion"].pop("read_only"), "emotion: root filesystem not read-only"),
    (lambda d: d["services"]["emotion"].pop("tmpfs"), "not on a tmpfs"),
    (lambda d: d["services"]["emotion-cpu"].update(tmpfs=["/tmp:size=64m"]), "smaller than the uploads"),
    (_set_env("emotion", "EMOTION_MAX_QUEUE", "40"), "smaller than the uploads"),
    (_set_env("emotion", "EMOTION_MAX_UPLOAD_MBS", "100"), "unknown settings ['EMOTION_MAX_UPLOAD_MBS']"),
    (_set_env("emotion", "EMOTION_PROVIDERS", "CPUExecutionProvider"), "CUDA first"),
    (_set_env("emotion-cpu", "EMOTION_ORT_THREADS", "8"), "exceeds the CPU limit"),
    (lambda d: d["services"]["emotion"].pop("healthcheck"), "no healthcheck"),
    (_set_env("emotion", "EMOTION_NUMBA_CACHE_SEED", "/app/cache"), "not the image's baked cache"),
    (_set_env("emotion", "NUMBA_CACHE_DIR", "/app/numba-cache"), "not on a tmpfs"),
    (lambda d: d["services"]["emotion"].pop("restart"), "no restart policy"),
    (lambda d: d["services"]["emotion"].update(user="0"), "runs as root"),
    (lambda d: d["services"]["emotion-cpu"]["deploy"]["resources"].update(
        reservations={"devices": [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]}), "reserves devices"),
    (lambda d: d["services"]["emotion-replica"].update(ports=["8000:8000"]), "must not publish ports"),
    (lambda d: d["services"]["proxy"].pop("depends_on"), "wait for healthy replicas"),
])
def test_compose_checks_fail_on_a_broken_file(compose, mutate, expected):
    doc = copy.deepcopy(compose)
    mutate(doc)
    problems = deployment_problems(doc)
    assert any(expected in p for p in problems), problems


# --- the reverse proxy ----------------------------------------------------------------------

def nginx_problems(conf: str, doc: dict) -> list[str]:
    problems = []
    env = environment(doc["services"][REPLICA])
    upload = float(env.get("EMOTION_MAX_UPLOAD_MB", 100)) * MIB
    sizes = re.findall(r"^\s*client_max_body_size\s+(\S+);", conf, re.M)
    if len(sizes) != 1:
        problems.append(f"expected one client_max_body_size, found {sizes}")
    else:
        limit = size_bytes(sizes[0])
        # The service accepts the file limit plus a little multipart envelope: the proxy must
        # let all of that through and stop anything much larger.
        if not upload + 1024 <= limit <= upload + MIB:
            problems.append(f"client_max_body_size {sizes[0]} does not match EMOTION_MAX_UPLOAD_MB={upload / MIB:g}")
    read = re.findall(r"^\s*proxy_read_timeout\s+(\d+)s;", conf, re.M)
    if not read or int(read[0]) <= float(env.get("EMOTION_REQUEST_TIMEOUT_S", 120)):
        problems.append("proxy_read_timeout must exceed EMOTION_REQUEST_TIMEOUT_S (the replica answers 504 first)")
    if not re.search(rf"\b{re.escape(REPLICA)}:8000\b", conf):
        problems.append(f"the upstream is not {REPLICA}:8000")
    if "error_page 413" not in conf:
        problems.append("the proxy's 413 is not the service's JSON error")
    return problems


def test_nginx_enforces_the_service_body_limit(compose):
    assert nginx_problems(NGINX_CONF.read_text(), compose) == []


@pytest.mark.parametrize("old,new,expected", [
    ("client_max_body_size 102464k;", "client_max_body_size 1g;", "does not match"),
    ("client_max_body_size 102464k;", "client_max_body_size 1m;", "does not match"),
    ("client_max_body_size 102464k;", "", "expected one client_max_body_size"),
    ("proxy_read_timeout 150s;", "proxy_read_timeout 60s;", "proxy_read_timeout"),
])
def test_nginx_checks_fail_on_a_broken_config(compose, old, new, expected):
    conf = NGINX_CONF.read_text()
    assert old in conf
    assert any(expected in p for p in nginx_problems(conf.replace(old, new), compose))


def nginx_binary() -> str:
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)
    if not found:
        pytest.skip("nginx is not installed (apt-get install nginx-light): the proxy config is "
                    "checked statically only")
    return found


@contextlib.contextmanager
def nginx_in_front_of(upstream_port: int):
    """docker/nginx.conf run for real: the replica name replaced by 127.0.0.1:<port>, its
    listening port and /tmp paths moved to a scratch directory."""
    work = Path(tempfile.mkdtemp(prefix="emotion-nginx-"))
    work.chmod(0o755)  # workers run as an unprivileged user when started by root
    port = free_port()
    conf = (NGINX_CONF.read_text().replace("/tmp/", f"{work}/")
            .replace(f"{REPLICA}:8000", f"127.0.0.1:{upstream_port}").replace("listen 8080;", f"listen {port};"))
    (work / "nginx.conf").write_text(conf)
    proc = subprocess.Popen([nginx_binary(), "-c", str(work / "nginx.conf"), "-p", f"{work}/", "-g", "daemon off;"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {proc.stderr.read()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if time.monotonic() > deadline:
                raise TimeoutError("nginx did not start")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        if proc.poll() is None:
            proc.kill()
        shutil.rmtree(work, ignore_errors=True)


def raw_request(url: str, head: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


@pytest.mark.slow
def test_nginx_config_runs_in_front_of_the_service():
    nginx_binary()
    with running_server(REPO_ROOT / "models" / "default") as srv:
        with nginx_in_front_of(srv.port) as proxy:
            assert httpx.get(proxy + "/proxy-health", timeout=10).status_code == 200
            ready = httpx.get(proxy + "/readyz", timeout=10)
            assert ready.status_code == 200 and ready.json()["status"] == "ready"
            models = httpx.get(proxy + "/v1/models", timeout=10).json()["models"][0]
            assert models["manifest_sha256"]
            # A body over the limit is refused by the proxy from its Content-Length, before a
            # byte of it is read, with the service's JSON error shape.
            answer = raw_request(proxy, b"POST /predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                                        b"Content-Type: multipart/form-data; boundary=b\r\n"
                                        b"Content-Length: 209715200\r\n\r\n")
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 413"), answer[:300]
            assert json.loads(body)["error"]["code"] == "upload_too_large"
            # Under the proxy's limit: the service answers itself (its own limit check, JSON).
            small = httpx.post(proxy + "/predict", files={"file": ("a.mp4", b"", "video/mp4")}, timeout=30)
            assert small.status_code == 400 and small.json()["error"]["code"]
            # The live WebSocket through the proxy: the upgrade is handed on, media and updates flow.
            from service.live.client import stream_file

            live = stream_file(proxy, corpus_dir("cremad_av") / "1001_DFA_HAP_XX.flv", pace="fast")
            assert live["updates"] and live["summary"]["label"] in models["classes"]
            srv.stop()
            down = httpx.get(proxy + "/readyz", timeout=10)
            assert down.status_code == 503 and down.headers["retry-after"] == "2"
            assert down.json()["error"]["code"] == "unavailable"


def test_nginx_limit_follows_the_compose_upload_setting(compose):
    doc = copy.deepcopy(compose)
    doc["services"][REPLICA]["environment"]["EMOTION_MAX_UPLOAD_MB"] = "500"
    assert any("does not match" in p for p in nginx_problems(NGINX_CONF.read_text(), doc))


# --- the Dockerfiles ------------------------------------------------------------------------

def hadolint(path: Path) -> list[dict]:
    proc = subprocess.run([bin_tool("hadolint"), "--no-color", "--format", "json", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip(), proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_dockerfile_passes_hadolint(kind):
    findings = hadolint(DOCKERFILES[kind])
    assert findings == [], "\n".join(f"{f['line']}: {f['code']} {f['level']}: {f['message']}" for f in findings)


def test_hadolint_reports_errors(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nMAINTAINER someone\nWORKDIR app\nRUN cd /tmp && pip install numpy\n")
    codes = {(f["code"], f["level"]) for f in hadolint(bad)}
    assert {("DL3000", "error"), ("DL4000", "error"), ("DL3006", "warning")} <= codes, codes


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines, current = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        current += " " + line[:-1] if line.endswith("\\") else " " + line
        if not line.endswith("\\"):
            word, _, rest = current.strip().partition(" ")
            lines.append((word.upper(), rest.strip()))
            current = ""
    return lines


def final_stage(path: Path) -> list[tuple[str, str]]:
    ins = instructions(path)
    start = max(i for i, (word, _) in enumerate(ins) if word == "FROM")
    return ins[start:]


def image_env(path: Path, upto_check: bool = False) -> dict[str, str]:
    """The final stage's ENV (what the container runs with), or the ENV in force at its
    `python -m service --check` build step."""
    env: dict[str, str] = {}
    for word, args in final_stage(path):
        if upto_check and word == "RUN" and "-m service --check" in args:
            prefix = args.split("python", 1)[0]
            env.update(dict(kv.split("=", 1) for kv in prefix.split() if "=" in kv))
            break
        if word == "ENV":
            env.update(dict(kv.split("=", 1) for kv in args.split()))
    env.pop("PATH", None)  # the image's virtualenv; here the running interpreter
    return env


def pyproject() -> dict:
    import tomllib

    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_images_install_only_through_the_ci_install_script(kind):
    ins = instructions(DOCKERFILES[kind])
    runs = [args for word, args in ins if word == "RUN"]
    for args in runs:
        assert not re.search(r"\b(pip|apt-get|apt|apk|conda|uv)\b\s+(install|add)", args), \
            f"{DOCKERFILES[kind].name} installs outside scripts/install.sh: {args}"
    calls = [a.split("scripts/install.sh", 1)[1].split("&&")[0].split() for a in runs if "scripts/install.sh" in a]
    assert ["--system"] in calls, f"the system packages should come from the install script: {calls}"
    extras = [[w for w in c if not w.startswith("-")] for c in calls if "--python" in c]
    assert extras == [[kind]], f"the {kind} image should install exactly the '{kind}' extra: {extras}"
    # CI runs the same script (with cpu,train,dev) ...
    assert re.search(r"scripts/install\.sh \S*cpu", (REPO_ROOT / ".ci" / "run").read_text())
    # ... and the image gets the service's pinned dependencies and its extra: no TensorFlow.
    assert not any(word == "COPY" and "trainer" in args for word, args in ins)
    project = pyproject()["project"]
    deps = project["dependencies"] + project["optional-dependencies"][kind]
    assert not [d for d in deps if re.match(r"(tensorflow|keras|tf2onnx)", d)], deps
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[\w.]+", d) for d in deps), f"not pinned exactly: {deps}"


def test_build_context_leaves_out_the_trainer_and_local_state():
    ignore = [line.strip() for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*", ".dockerignore should ignore everything, then allow what the images need"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert allowed == {"scripts/install.sh", "pyproject.toml", "setup.py", "README.md", "service", "models/default"}


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_image_shape(kind):
    path = DOCKERFILES[kind]
    ins = instructions(path)
    froms = [args for word, args in ins if word == "FROM"]
    assert len(froms) >= 2, "multi-stage: the build stage's tools stay out of the image"
    for ref in froms:
        image = ref.split()[0]
        if image in {a.split()[-1] for a in froms if " AS " in a.upper()}:
            continue  # an earlier stage
        assert re.search(r":\S*\d+\.\d+\.\d+", image), f"base image not pinned to a release tag: {image}"
    final = final_stage(path)
    words = [w for w, _ in final]
    user = [a for w, a in final if w == "USER"]
    assert user and user[-1].split(":")[0] not in ("0", "root"), "the image must run as non-root"
    assert words.index("USER") > max(i for i, w in enumerate(words) if w == "RUN")
    assert ("ENTRYPOINT", '["python", "-m", "service"]') in final
    assert any(w == "HEALTHCHECK" and "service.run.probe" in a for w, a in final)
    assert any(w == "COPY" and a.split()[-1] == "/app/models/default" for w, a in final)
    env = image_env(path)
    assert env["EMOTION_MODEL_DIR"] == "/app/models/default"
    assert env["NUMBA_CACHE_DIR"].startswith("/tmp/"), "numba needs a writable cache: the tmpfs"
    build_env = image_env(path, upto_check=True)
    assert build_env["NUMBA_CACHE_DIR"] == env["EMOTION_NUMBA_CACHE_SEED"], \
        "the cache compiled by the build step should seed the runtime cache"
    assert build_env.get("NUMBA_CPU_NAME") == env.get("NUMBA_CPU_NAME") == "generic", \
        "kernels compiled for the build machine's CPU would be recompiled on the host"


def test_gpu_base_image_matches_the_onnxruntime_gpu_build():
    pins = pyproject()["project"]["optional-dependencies"]["gpu"]
    (pin,) = [p for p in pins if p.startswith("onnxruntime-gpu==")]
    minor = int(pin.split("==")[1].split(".")[1])
    cuda_major = 13 if minor >= 27 else 12  # PyPI's onnxruntime-gpu moved to CUDA 13 at 1.27
    base = [a for w, a in instructions(DOCKERFILES["gpu"]) if w == "FROM"][0].split()[0]
    m = re.fullmatch(r"nvidia/cuda:(\d+)\.\d+\.\d+-cudnn-runtime-ubuntu\d+\.\d+", base)
    assert m, f"expected NVIDIA's CUDA + cuDNN runtime image pinned by version, got {base}"
    assert int(m.group(1)) == cuda_major, f"{pin} needs CUDA {cuda_major}.x, the base has {base}"


def test_cpu_base_image_python_is_supported():
    base = [a for w, a in instructions(DOCKERFILES["cpu"]) if w == "FROM"][0].split()[0]
    version = tuple(int(x) for x in re.match(r"python:(\d+)\.(\d+)", base).groups())
    low, high = re.findall(r"(\d+)\.(\d+)", pyproject()["project"]["requires-python"])
    assert tuple(map(int, low)) <= version < tuple(map(int, high))


# --- the service run the way the container runs it ------------------------------------------

def drop_file_override_capabilities() -> None:
    """In the child, before exec: give up CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH and CAP_FOWNER
    (prctl PR_CAPBSET_DROP), so file permissions bind even when the tests run as root: the
    read-only image directories are then really read-only to the service."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2, 3):
        if libc.prctl(24, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


@contextlib.contextmanager
def read_only_enforced():
    """Server's child started without the root capabilities that bypass file permissions
    (nothing to do for an ordinary user), without changing conftest."""
    if os.geteuid() != 0:
        yield
        return
    original = subprocess.Popen
    subprocess.Popen = functools.partial(original, preexec_fn=drop_file_override_capabilities)
    try:
        yield
    finally:
        subprocess.Popen = original


def read_only_tree(root: Path) -> None:
    for p in [root, *root.rglob("*")]:
        p.chmod(0o555 if p.is_dir() else 0o444)


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.is_file()}


def container_env(image_root: Path, tmpfs: Path) -> dict[str, str]:
    """The GPU image's ENV, then the compose service's environment, with container paths
    mapped onto the test's directories (/app -> image_root, /tmp -> tmpfs)."""
    env = {**image_env(DOCKERFILES["gpu"]), **environment(load_compose()["services"]["emotion"])}

    def mapped(value: str) -> str:
        if value.startswith("/app/"):
            return str(image_root / value[len("/app/"):])
        if value == "/tmp" or value.startswith("/tmp/"):
            return str(tmpfs / value[len("/tmp/"):])
        return value

    # Host and port: Server binds 127.0.0.1 on a free port (the image: 0.0.0.0:8000).
    return {k: mapped(v) for k, v in env.items() if k not in ("EMOTION_HOST", "EMOTION_PORT")}


@pytest.mark.parametrize("value,expected", [
    ("CUDAExecutionProvider,CPUExecutionProvider", ["CUDAExecutionProvider", "CPUExecutionProvider"]),
    (" CPUExecutionProvider ", ["CPUExecutionProvider"]),
    ('["CUDAExecutionProvider", "CPUExecutionProvider"]', ["CUDAExecutionProvider", "CPUExecutionProvider"]),
])
def test_providers_setting(monkeypatch, value, expected):
    from service.settings import Settings

    monkeypatch.setenv("EMOTION_PROVIDERS", value)
    assert Settings().providers == expected


@pytest.mark.parametrize("value", ["", " , ", "[]", "[oops"])
def test_providers_setting_refuses_nothing_or_garbage(monkeypatch, value):
    from pydantic import ValidationError

    from service.settings import Settings

    monkeypatch.setenv("EMOTION_PROVIDERS", value)
    with pytest.raises(ValidationError):
        Settings()


def test_a_cuda_fallback_shows_in_the_models_summary(monkeypatch, caplog):
    """onnxruntime-gpu lists CUDA as available even where it cannot start (no GPU in the
    container): the session then quietly runs on the CPU. That must be visible."""
    import onnxruntime as ort

    from service.model.bundle import load_bundle

    real = ort.InferenceSession
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", lambda path, sess_options=None, providers=None: real(
        path, sess_options=sess_options, providers=[p for p in providers if p != "CUDAExecutionProvider"]))
    bundle = load_bundle(REPO_ROOT / "models" / "default", ["CUDAExecutionProvider", "CPUExecutionProvider"],
                         roles=["classifier"])
    summary = bundle.summary()
    assert summary["execution_providers"] == {
        "requested": ["CUDAExecutionProvider", "CPUExecutionProvider"],
        "available": ["CUDAExecutionProvider", "CPUExecutionProvider"],
        "in_use": ["CPUExecutionProvider"]}
    assert summary["artifacts"]["classifier"]["providers"] == ["CPUExecutionProvider"]
    assert summary["artifacts"]["audio_encoder"]["providers"] == []  # verified, not opened
    assert "CUDAExecutionProvider is installed but could not be used" in caplog.text
    assert summary["manifest_sha256"] == hashlib.sha256(
        (REPO_ROOT / "models" / "default" / "manifest.json").read_bytes()).hexdigest()


def test_probe_exit_codes(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}/readyz"
    proc = subprocess.run([sys.executable, "-m", "service.run.probe", dead], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 1 and "not ready" in proc.stderr


@pytest.mark.slow
def test_service_runs_like_the_container_and_answers_a_real_clip():
    clip = corpus_dir("cremad_av") / "1001_DFA_HAP_XX.flv"
    if not clip.is_file():
        pytest.skip(f"CREMA-D clip {clip.name} not found in {clip.parent}")
    work = Path(tempfile.mkdtemp(prefix="emotion-container-"))
    try:
        work.chmod(0o755)
        image_root, tmpfs = work / "app", work / "tmpfs"
        bundle = image_root / "models" / "default"
        shutil.copytree(REPO_ROOT / "models" / "default", bundle)
        env = container_env(image_root, tmpfs)
        assert env["EMOTION_MODEL_DIR"] == str(bundle)

        # The image's build step: start once without serving, compiling numba's kernels into
        # the image (root, writable at build time).
        build_env = {**os.environ, **image_env(DOCKERFILES["gpu"], upto_check=True)}
        build_env["NUMBA_CACHE_DIR"] = str(image_root / "numba-cache")
        build_env["EMOTION_MODEL_DIR"] = str(bundle)
        proc = subprocess.run([sys.executable, "-m", "service", "--check"], cwd=REPO_ROOT, env=build_env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert json.loads(proc.stdout.strip().splitlines()[-1])["ready"] is True
        # The serving path no longer uses numba (service/pipeline/audio.py): nothing is compiled.
        seed = snapshot(image_root / "numba-cache") if (image_root / "numba-cache").exists() else {}
        assert seed == {}, "the service compiled numba kernels"

        # The container: the image read-only, a writable "tmpfs" (mode 1777 like /tmp).
        read_only_tree(image_root)
        before = snapshot(image_root)
        tmpfs.mkdir(mode=0o777)
        tmpfs.chmod(0o1777)
        with read_only_enforced():
            srv = Server(bundle, env)
        try:
            srv.wait_ready(timeout=120)
            if os.geteuid() == 0:
                status = Path(f"/proc/{srv.proc.pid}/status").read_text()
                cap_eff = int(re.search(r"CapEff:\s*([0-9a-f]+)", status).group(1), 16)
                assert not cap_eff & 0b1110, "the server can still override file permissions"
            cache = Path(env["NUMBA_CACHE_DIR"])
            assert (snapshot(cache) if cache.exists() else {}) == seed  # nothing compiled at run time either

            model = httpx.get(srv.url + "/v1/models", timeout=10).json()["models"][0]
            assert model["manifest_sha256"] == hashlib.sha256((bundle / "manifest.json").read_bytes()).hexdigest()
            assert model["execution_providers"]["requested"] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
            import onnxruntime

            expected = "CUDAExecutionProvider" if "CUDAExecutionProvider" in onnxruntime.get_available_providers() \
                else "CPUExecutionProvider"
            served = {r: a for r, a in model["artifacts"].items() if a["providers"]}
            assert {"audio_encoder", "frame_encoder", "image_features", "classifier"} <= set(served)
            assert all(a["providers"][0] == expected for a in served.values())

            probe = subprocess.run([sys.executable, "-m", "service.run.probe", srv.url + "/readyz"], cwd=REPO_ROOT,
                                   capture_output=True, text=True, timeout=30)
            assert probe.returncode == 0, probe.stderr

            with open(clip, "rb") as fh:
                r = httpx.post(srv.url + "/predict", files={"file": (clip.name, fh, "video/x-flv")}, timeout=120)
            assert r.status_code == 200, r.text
            body = r.json()
            assert set(body["probabilities"]) == set(model["classes"])
            assert math.isclose(sum(body["probabilities"].values()), 1.0, abs_tol=1e-6)
            assert body["modalities"]["face"] == "detected" and body["modalities"]["audio"] in VOICED
            assert list(Path(env["EMOTION_TMP_DIR"]).iterdir()) == [], "an upload was left in the tmpfs"
        finally:
            srv.stop()
        assert snapshot(image_root) == before, "the service wrote into the (read-only) image"
    finally:
        for p in [work, *work.rglob("*")]:
            with contextlib.suppress(OSError):
                p.chmod(0o755 if p.is_dir() else 0o644)
        shutil.rmtree(work, ignore_errors=True)
