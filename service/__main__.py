"""`python -m service [--host H] [--port P] [--model-dir DIR]`: start the API with uvicorn."""
from __future__ import annotations

import argparse
import os

import uvicorn

from .app import create_app
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
    args = parser.parse_args(argv)
    configure_logging(args.log_level, defaults.log_format)
    settings = defaults.model_copy(update={"host": args.host, "port": args.port, "model_dir": args.model_dir})
    # Our middleware writes one structured line per request: uvicorn's access log would repeat it.
    uvicorn.run(create_app(Settings.model_validate(settings.model_dump())), host=args.host, port=args.port,
                log_level=args.log_level.lower(), access_log=False, log_config=None)


if __name__ == "__main__":
    main()
