# syntax=docker/dockerfile:1
# jsruntime: the daemon (`jsrt run`) in a slim image, as a non-root user.
#
#   docker build -t jsruntime .
#   docker run --rm -e DATABASE_URL=postgresql://user:pass@db:5432/jsrt jsruntime migrate up
#   docker run -d -e DATABASE_URL=postgresql://user:pass@db:5432/jsrt -p 9464:9464 jsruntime
#   (HTTP triggers too: ... -p 8080:8080 jsruntime run --http 0.0.0.0:8080)

# ---------------------------------------------------------------- builder: wheels only
FROM python:3.11-slim AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY consumer ./consumer
# the project and every dependency as wheels (all of them ship binary wheels: no compiler)
RUN pip wheel --wheel-dir /wheels .

# ---------------------------------------------------------------- runtime
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    JSRT_SCHEMA_DIR=/app/schema \
    JSRT_TRIGGERS_FILE=/app/triggers.sql \
    JSRT_METRICS_ADDR=0.0.0.0:9464 \
    JSRT_LOG_FORMAT=json
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels jsruntime \
    && useradd --system --uid 10001 --user-group --home-dir /app --shell /usr/sbin/nologin jsrt
WORKDIR /app
# migrations and triggers, where JSRT_SCHEMA_DIR / JSRT_TRIGGERS_FILE point (`jsrt migrate up`)
COPY schema ./schema
COPY triggers.sql ./
USER jsrt
# 8080: HTTP triggers (with `run --http 0.0.0.0:8080`); 9464: /metrics, /healthz, /readyz
EXPOSE 8080 9464
# liveness from /healthz on the metrics port (no curl in a slim image: Python's urllib)
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('JSRT_METRICS_ADDR', ':9464').rpartition(':')[2]; urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=3)"]
ENTRYPOINT ["jsrt"]
CMD ["run"]
