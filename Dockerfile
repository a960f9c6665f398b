# The collector as an image: the wheel built from this checkout, installed into a venv, run as a
# non-root user. Storage: set the R2_* variables (docs/deploy.md); without them it stores into
# the /data volume, which must then be a persistent volume.

# Stage 1: build the wheel (the build backend comes from PyPI; nothing of it reaches the image).
FROM python:3.11.13-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY backend ./backend
COPY js ./js
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# Stage 2: install it, with its dependencies, into a venv.
FROM python:3.11.13-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/collector/bin:$PATH \
    HOST=0.0.0.0 \
    PORT=5005 \
    LOCAL_STORAGE_DIR=/data
COPY --from=build /wheels /wheels
RUN python -m venv /opt/collector \
    && /opt/collector/bin/pip install --no-cache-dir /wheels/*.whl \
    && rm -rf /wheels \
    && useradd --system --uid 10001 --user-group --home-dir /data --shell /usr/sbin/nologin collector \
    && mkdir -p /data \
    && chown collector:collector /data
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 5005
# No curl in a slim image: Python asks /healthz (200 only while storage answers).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '5005') + '/healthz', timeout=4)"]
# Exec form: no shell in between, so the collector is PID 1 and receives SIGTERM itself.
CMD ["collector", "serve"]
