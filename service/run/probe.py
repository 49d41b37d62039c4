"""`python -m service.run.probe [URL]`: exit 0 if the service answers 200 on /readyz, else 1.

The container healthcheck (Dockerfiles, docker-compose.yml). Standard library only, so a
probe costs a few milliseconds, not the service's imports. Default URL:
http://127.0.0.1:$EMOTION_PORT/readyz.
"""
from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    url = argv[0] if argv else f"http://127.0.0.1:{os.environ.get('EMOTION_PORT', '8000')}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=float(os.environ.get("EMOTION_PROBE_TIMEOUT_S", "4"))) as resp:
            ok = resp.status == 200
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"not ready: {url}: {exc}", file=sys.stderr)
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
