"""`python -m service [--host H] [--port P] [--model-dir DIR] [--check]`: start the API with uvicorn.

`--check` loads, verifies and warms up the bundle as the server would, prints the /readyz and
/v1/models answers as JSON and exits (0: the service would turn ready); the images run it
at build time (see service/deploy.py).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import uvicorn

from .deploy import seed_numba_cache
from .observability import configure_logging
from .settings import Settings


def main(argv: list[str] | None = None) -> None:
    defaults = Settings()
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__)
    parser.add_argument("--host", default=defaults.host)
    parser.add_argument("--port", type=int, default=defaults.port)
    parser.add_argument("--model-dir", default=str(defaults.model_dir),
                        help="bundle directory (env EMOTION_MODEL_DIR; default: the shipped bundle)")
    parser.add_argument("--log-level", default=os.environ.get("EMOTION_LOG_LEVEL", "info"))
    parser.add_argument("--check", action="store_true",
                        help="start up without serving (load, verify, warm up), print /v1/models, exit")
    args = parser.parse_args(argv)
    configure_logging(args.log_level, defaults.log_format)
    settings = defaults.model_copy(update={"host": args.host, "port": args.port, "model_dir": args.model_dir})
    # Before librosa's kernels are first needed (the app's warm-up): load them, don't compile.
    seed_numba_cache(settings.numba_cache_seed)
    if args.check:
        from .deploy import check

        result = check(Settings.model_validate(settings.model_dump()))
        print(json.dumps(result), flush=True)  # one line, after the start-up's log lines
        sys.exit(0 if result["ready"] else 1)
    from .app import create_app
    from .protocol import JsonErrorH11Protocol

    # Our middleware writes one structured line per request: uvicorn's access log would repeat it.
    uvicorn.run(create_app(Settings.model_validate(settings.model_dump())), host=args.host, port=args.port,
                log_level=args.log_level.lower(), access_log=False, log_config=None,
                http=JsonErrorH11Protocol)


if __name__ == "__main__":
    main()
