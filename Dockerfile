# siogate gateway image: docker build -t siogate:local .   (see docs/deployment.md)
#
# Dependencies come from requirements/serve.lock (exact pins), then the package itself
# without resolving anything again. The image runs as an unprivileged user, listens on
# 0.0.0.0:8000, and needs SIOGATE_API_KEY and SIOGATE_JWT_SECRET: on a non-loopback host
# `serve` refuses to generate credentials (exit 2).

# The lock was compiled for CPython 3.11; the build stage and the runtime share the base,
# so the venv copied between them finds the same interpreter at the same path.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/siogate
WORKDIR /src
COPY requirements/serve.lock requirements/serve.lock
# The lock lists every dependency, transitive ones included: --no-deps installs exactly it,
# and pip check fails the build if it ever misses one.
RUN /opt/siogate/bin/pip install --no-deps -r requirements/serve.lock
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
RUN /opt/siogate/bin/pip install --no-deps . && /opt/siogate/bin/pip check

FROM ${PYTHON_IMAGE}
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin siogate
COPY --from=build /opt/siogate /opt/siogate
COPY deploy/healthcheck.py /opt/siogate/healthcheck.py
ENV PATH=/opt/siogate/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SIOGATE_HOST=0.0.0.0 \
    SIOGATE_PORT=8000
USER siogate:siogate
EXPOSE 8000
# No curl in a slim image: a stdlib script asks GET /healthz (exit 0 on 200, else 1).
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "/opt/siogate/healthcheck.py"]
# SIGTERM (docker stop) drains: serve closes its sockets and exits.
STOPSIGNAL SIGTERM
CMD ["siogate", "serve"]
