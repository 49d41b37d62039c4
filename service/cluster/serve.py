"""The HTTP service as a Ray Serve application: the same FastAPI app (service/http/app.py),
routes and contract as `python -m service`, behind Serve's proxy, in replicas that Serve
scales with the load. Each replica loads the bundle once, before it takes traffic.

    serve run service.cluster.serve:app                        # the shipped bundle, on a local Ray
    serve run deploy/ray/serve.yaml                            # replicas, autoscaling, resources
    serve deploy deploy/ray/serve.yaml --address http://HEAD:8265

The service's settings (EMOTION_*, README "Settings") are read in each replica: set them
in the config's runtime_env (deploy/ray/serve.yaml) or pass `model_dir` as an argument.
"""
from __future__ import annotations

from typing import Any

from ray import serve

from service.run.blas_threads import BLAS_THREAD_VARIABLES

# Replicas follow the requests in flight: each works on up to EMOTION_MAX_CONCURRENCY (2)
# at once and queues the rest (the service's own gate), as one `python -m service` does.
AUTOSCALING = {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 2,
               "upscale_delay_s": 10, "downscale_delay_s": 120}
ACTOR_OPTIONS = {"num_cpus": 2, "runtime_env": {"env_vars": {v: "1" for v in BLAS_THREAD_VARIABLES}}}


@serve.deployment(name="emotion-av", autoscaling_config=AUTOSCALING, ray_actor_options=ACTOR_OPTIONS,
                  max_ongoing_requests=8, health_check_period_s=10)
@serve.ingress()
class EmotionService:
    """One replica: the service's app with its bundle loaded (the app is built here, in the
    replica's process, so nothing of it is pickled)."""

    def __init__(self, model_dir: str | None = None, settings: dict[str, Any] | None = None):
        from service.http.app import create_app
        from service.settings import Settings

        given = dict(settings or {})
        if model_dir:
            given["model_dir"] = model_dir
        self._app = create_app(Settings(**given), load=False)
        self._app.state.model.load_now()

    def __serve_build_asgi_app__(self):
        return self._app

    def check_health(self) -> None:
        if not self._app.state.model.ready:
            raise RuntimeError("the model bundle is not loaded")


def build(args: dict[str, Any]) -> serve.Application:
    """`serve run service.cluster.serve:build model_dir=...`: the application with arguments."""
    return EmotionService.bind(args.get("model_dir"), {k: v for k, v in args.items() if k != "model_dir"} or None)


app = EmotionService.bind()
