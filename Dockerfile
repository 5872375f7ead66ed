# One image for the gateway and the workers: the command chooses (sgw serve | sgw worker ...).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md constraints.txt ./
COPY gateway ./gateway
COPY worker_sdk ./worker_sdk
COPY sgw_client ./sgw_client
RUN pip install -c constraints.txt .
COPY examples ./examples
COPY services.yaml ./

RUN useradd --system --uid 10001 --home-dir /app sg && mkdir -p /data && chown sg /data
USER sg

ENV SG_HOST=0.0.0.0 \
    SG_PORT=8000 \
    SG_CATALOGUE=/app/services.yaml \
    SG_STORE_URL=sqlite:////data/servicegateway.db
EXPOSE 8000

# The gateway's liveness; worker containers turn it off in compose.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('SG_PORT', '8000')}/healthz\", timeout=2)"]

CMD ["sgw", "serve"]
