# jsruntime: the daemon (`jsrt run`) in a slim image, as a non-root user.
#
#   docker build -t jsruntime .                                   # on python:3.11-slim
#   docker build --build-arg BASE_IMAGE=jsruntime-base:bookworm -t jsruntime .
#       # on a Debian base made from Debian's packages (`make docker-base`), no Docker Hub
#   docker run --rm -e DATABASE_URL=postgresql://user:pass@db:5432/jsrt jsruntime migrate up
#   docker run -d -e DATABASE_URL=postgresql://user:pass@db:5432/jsrt -p 9464:9464 jsruntime
#   (HTTP triggers too: ... -p 8080:8080 jsruntime run --http 0.0.0.0:8080)
#
# The classic builder builds it as well as BuildKit (no RUN --mount). Any base with Python 3.11
# and its venv module works: the image uses `python3 -m venv`, never the base's own pip.
ARG BASE_IMAGE=python:3.11-slim
# The web console's front-end packages (htmx, CodeMirror) come from the npm registry in a
# stage of their own (any image with npm will do), pinned by the committed package-lock.json.
ARG NODE_IMAGE=node:20-bookworm-slim

# ---------------------------------------------------------------- assets: npm ci
FROM ${NODE_IMAGE} AS assets
WORKDIR /assets
COPY consumer/console/assets/package.json consumer/console/assets/package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error

# ---------------------------------------------------------------- builder: the venv
FROM ${BASE_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml setup.py MANIFEST.in README.md triggers.sql ./
COPY schema ./schema
COPY consumer ./consumer
# the console's files into consumer/console/static/vendor/, so that the wheel carries them
COPY --from=assets /assets/node_modules ./consumer/console/assets/node_modules
RUN python3 consumer/console/vendor.py --copy-only && rm -rf consumer/console/assets/node_modules
# The wheel carries schema/ and triggers.sql (setup.py), so `jsrt migrate up` needs nothing
# beside the venv; every dependency ships binary wheels (no compiler). pip and setuptools
# leave the venv afterwards: nothing at run time installs anything.
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --quiet . \
    && /opt/venv/bin/pip uninstall --quiet --yes pip setuptools

# ---------------------------------------------------------------- runtime
FROM ${BASE_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    JSRT_METRICS_ADDR=0.0.0.0:9464 \
    JSRT_LOG_FORMAT=json
RUN useradd --system --uid 10001 --user-group --home-dir /app --shell /usr/sbin/nologin jsrt
# the same path as in the builder: the venv's scripts name /opt/venv/bin/python3 in their #!
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
USER jsrt
# 8080: HTTP triggers (with `run --http 0.0.0.0:8080`); 9464: /metrics, /healthz, /readyz
EXPOSE 8080 9464
# liveness from /healthz on the metrics port (no curl in a slim image: Python's urllib)
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; port = os.environ.get('JSRT_METRICS_ADDR', ':9464').rpartition(':')[2]; urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=3)"]
ENTRYPOINT ["jsrt"]
CMD ["run"]
