"""Docker HEALTHCHECK: healthy when the dashboard (8501) or the HTTP service (8000) answers."""

import sys
import urllib.request

URLS = ("http://127.0.0.1:8501/_stcore/health", "http://127.0.0.1:8000/v1/health")


def main() -> int:
    for url in URLS:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return 0
        except OSError:
            continue
    return 1


if __name__ == "__main__":
    sys.exit(main())
