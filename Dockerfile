# Parallax, self-hosted: the full dashboard (models on CPU) on port 8501, or the HTTP service.
#   docker build -t parallax .
#   docker run --rm -p 8501:8501 -v parallax-cache:/app/cache parallax
#   docker run --rm -p 8000:8000 -v parallax-cache:/app/cache -e PARALLAX_API_KEYS=KEY parallax \
#       python -m engine serve --host 0.0.0.0 --port 8000          (docs/api.md)
# View-only on a bundle: add -e PARALLAX_VIEW_ONLY=1 -e PARALLAX_BUNDLE=/path/x.parallax.zip.
# See docs/deploy.md. (Written without a Docker engine at hand: not built by its author.)
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PARALLAX_CACHE=/app/cache

WORKDIR /app

# Dependencies first: this layer is reused until the requirement files change.
# dashboard/requirements.txt is the root file with torch narrowed to the CPU-only build (from the
# PyTorch CPU index): a small image. For a GPU image install requirements.txt (CUDA torch).
COPY requirements.txt .
COPY dashboard/requirements.txt dashboard/requirements.txt
COPY requirements-serve.txt .
RUN pip install -r dashboard/requirements.txt -r requirements-serve.txt

# The app, its .streamlit/config.toml and the committed demo bundle (.dockerignore trims the rest).
COPY . .

RUN useradd --create-home --uid 10001 parallax \
    && mkdir -p /app/cache \
    && chown -R parallax:parallax /app/cache
USER parallax

EXPOSE 8501 8000
# Healthy when whichever of the two it runs answers: the dashboard or the HTTP service.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "scripts/healthcheck.py"]

# Run from the repository root so Streamlit reads ./.streamlit/config.toml.
CMD ["streamlit", "run", "dashboard/app.py", "--server.address=0.0.0.0", "--server.port=8501"]
