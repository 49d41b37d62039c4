"""The HTTP service as a Ray Serve application on a real local Ray cluster (2 CPUs, loopback):
POST /predict through Serve's proxy answers with the body `python -m service` gives."""
from __future__ import annotations

import math

import httpx
import pytest
from conftest import REPO_ROOT, corpus_dir, free_port, running_server

pytest.importorskip("ray", reason="the cluster extra is not installed (scripts/install.sh cpu,dev,cluster)")

pytestmark = pytest.mark.slow
BUNDLE = REPO_ROOT / "models" / "default"


@pytest.fixture(scope="module")
def serve_url():
    import ray
    from ray import serve

    from service.cluster.serve import EmotionService

    port = free_port()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        one = EmotionService.options(autoscaling_config=None, num_replicas=1,
                                     ray_actor_options={"num_cpus": 1,
                                                        "runtime_env": {"env_vars": {"OMP_NUM_THREADS": "1",
                                                                                     "OPENBLAS_NUM_THREADS": "1"}}})
        serve.run(one.bind(str(BUNDLE)), name="emotion-av", route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


def same(a, b, path="body") -> None:
    """Equal JSON, floats within 1e-6."""
    if isinstance(a, float) or isinstance(b, float):
        assert math.isclose(a, b, abs_tol=1e-6), (path, a, b)
    elif isinstance(a, dict):
        assert set(a) == set(b), (path, set(a) ^ set(b))
        for k in a:
            same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{path}[{i}]")
    else:
        assert a == b, (path, a, b)


def post(url: str, name: str, data: bytes) -> httpx.Response:
    return httpx.post(url + "/predict", files={"file": (name, data, "application/octet-stream")}, timeout=180)


def test_serve_answers_post_predict_as_python_m_service(serve_url):
    clips = [corpus_dir("cremad_av") / "1001_DFA_ANG_XX.flv",
             sorted((corpus_dir("ravdess") / "Actor_01").glob("*.flac"))[0]]
    with running_server(BUNDLE) as server:
        for clip in clips:
            data = clip.read_bytes()
            via_serve, direct = post(serve_url, clip.name, data), post(server.url, clip.name, data)
            assert via_serve.status_code == direct.status_code == 200, via_serve.text
            a, b = via_serve.json(), direct.json()
            a.pop("timings_ms"), b.pop("timings_ms")
            same(a, b)
        bad_serve, bad_direct = post(serve_url, "x.mp4", b"not a video" * 100), post(server.url, "x.mp4",
                                                                                      b"not a video" * 100)
        assert bad_serve.status_code == bad_direct.status_code == 400
        assert bad_serve.json()["error"]["code"] == bad_direct.json()["error"]["code"] == "undecodable"
        models = httpx.get(serve_url + "/v1/models", timeout=30)
        assert models.status_code == 200 and models.json() == httpx.get(server.url + "/v1/models").json()
        assert httpx.get(serve_url + "/readyz", timeout=30).status_code == 200
