"""`python -m service [--host H] [--port P] [--model-dir DIR] [--log-level L] [--check]`: start the API.

Every option defaults to its setting (EMOTION_HOST, EMOTION_PORT, EMOTION_MODEL_DIR,
EMOTION_LOG_LEVEL; docs/settings.md). The server listens at once and loads the bundle in
the background (/readyz: 503 until it is loaded and warmed up, then 200); a bundle that
cannot be loaded stops the process with exit status 1.

`--check` loads, verifies and warms up the bundle as the server would, prints the /readyz and
/v1/models answers as JSON and exits (0: the service would turn ready); the images run it
at build time (see service/run/deploy.py).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

from service.run.blas_threads import one_blas_thread

one_blas_thread()  # before anything loads numpy

from service.http.observability import configure_logging  # noqa: E402
from service.run.deploy import seed_numba_cache  # noqa: E402  (after the thread settings)
from service.settings import Settings, missing_bundle_message  # noqa: E402

log = logging.getLogger("service")


def parse_settings(argv: list[str] | None) -> tuple[Settings, bool]:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", help="address to listen on (EMOTION_HOST; default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (EMOTION_PORT; default 8000)")
    parser.add_argument("--model-dir", help="bundle directory (EMOTION_MODEL_DIR; default: models/default)")
    parser.add_argument("--log-level", help="critical, error, warning, info or debug (EMOTION_LOG_LEVEL)")
    parser.add_argument("--check", action="store_true",
                        help="start up without serving (load, verify, warm up), print /v1/models, exit")
    args = parser.parse_args(argv)
    given = {k: v for k, v in vars(args).items() if k != "check" and v is not None}
    return Settings(**given), args.check  # options win over the environment


def main(argv: list[str] | None = None) -> None:
    settings, check_only = parse_settings(argv)
    configure_logging(settings.log_level, settings.log_format)
    if not (settings.model_dir / "manifest.json").is_file():
        log.error(missing_bundle_message(settings.model_dir))
        sys.exit(2)
    seed_numba_cache(settings.numba_cache_seed)
    if check_only:
        from service.run.deploy import check

        result = check(settings)
        print(json.dumps(result), flush=True)  # one line, after the start-up's log lines
        sys.exit(0 if result["ready"] else 1)
    sys.exit(serve(settings))


def websocket_options(settings: Settings) -> dict:
    """uvicorn's side of /v1/stream: the websockets library, its message limit the stream's own
    (a larger message is refused by the protocol layer with 1009 before it is buffered whole),
    no per-message compression (JPEG and PCM do not shrink; inflating would cost CPU), and
    keepalive pings: a client that answers none (it reads nothing) is dropped."""
    return {"ws": "websockets-sansio", "ws_max_size": settings.stream_max_message_kb * 1024,
            "ws_per_message_deflate": False, "ws_ping_interval": settings.stream_ping_s,
            "ws_ping_timeout": settings.stream_ping_s}


def serve(settings: Settings) -> int:
    """uvicorn on the app; 1 if the bundle could not be loaded (the server is stopped then)."""
    import uvicorn

    from service.run.memory import limit_malloc_arenas

    limit_malloc_arenas()

    from service.http.app import create_app
    from service.http.protocol import JsonErrorH11Protocol

    class ListenFirst(uvicorn.Server):
        """Starts loading the bundle only once the socket listens: the loader's imports hold the
        GIL for seconds and, started from the lifespan (before the bind), delayed the first 503."""

        async def startup(self, sockets=None) -> None:
            await super().startup(sockets)
            if self.started:
                app.state.model.start()

    app = create_app(settings, load=False)
    # Our middleware writes one structured line per request: uvicorn's access log would repeat it.
    server = ListenFirst(uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level,
                                        access_log=False, log_config=None,
                                        http=JsonErrorH11Protocol, **websocket_options(settings)))

    def stop(_: str) -> None:
        server.should_exit = True

    app.state.model.on_failure = stop
    server.run()
    return 1 if app.state.model.error else 0


if __name__ == "__main__":
    main()
