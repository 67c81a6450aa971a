# The edge image: the gateway, its virtual environment and the model files, run as non-root.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python3 -m venv /opt/callgate
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY providers ./providers
COPY pipeline ./pipeline
RUN /opt/callgate/bin/pip install --no-compile . \
    && CALLGATE_MODELS_DIR=/opt/models /opt/callgate/bin/callgate models fetch --source pypi \
    && find /opt/callgate -name '__pycache__' -prune -exec rm -rf {} +

FROM ${BASE_IMAGE}
ENV PATH=/opt/callgate/bin:$PATH \
    CALLGATE_MODELS_DIR=/opt/models \
    CALLGATE_CONFIG=/etc/callgate/callgate.yaml \
    CALLGATE_LOG_FORMAT=json \
    PYTHONUNBUFFERED=1
RUN useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin callgate
COPY --from=build /opt/callgate /opt/callgate
COPY --from=build /opt/models /opt/models
COPY config /etc/callgate
USER callgate
EXPOSE 8080 5060/udp 10000-10999/udp
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s \
    CMD ["python3", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status != 200)"]
ENTRYPOINT ["callgate", "serve"]
