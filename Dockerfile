# DataDiver Graph: the production image (real MongoDB via MONGODB_URI; no embedded database).
# Build: docker build -t datadiver-graph .   Run: see docker-compose.yml and README "Deployment".
#
# The base image is pinned to a patch release. To pin it byte for byte, append its digest
# (`docker buildx imagetools inspect python:3.11.14-slim-bookworm`) as `@sha256:...`.
FROM python:3.11.14-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DATADIVER_ENV=production \
    LOG_FORMAT=json \
    DATA_DIR=/tmp/datadiver

# An unprivileged user with a fixed id (volume permissions, Kubernetes runAsNonRoot).
RUN groupadd --system --gid 10001 datadiver \
    && useradd --system --uid 10001 --gid datadiver --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin datadiver

WORKDIR /app
# The runtime dependencies at the locked versions, hash-checked: not the `embedded` extra
# (SecantusDB, GPL) nor `dev`. Their own layer, rebuilt only when the lock changes.
COPY requirements/runtime.lock ./requirements/
RUN pip install --no-cache-dir --require-hashes -r requirements/runtime.lock
# The package itself, resolving nothing more. The source tree is not needed once installed.
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir --no-deps . && rm -rf /app/src /app/requirements

USER 10001:10001
EXPOSE 8000

# Liveness only (is the process serving?); readiness (/readyz) is for the load balancer.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request, sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"]

CMD ["datadiver-graph", "serve", "--host", "0.0.0.0", "--port", "8000"]
