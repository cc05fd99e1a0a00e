# The visual-search gRPC gateway (`python -m server`), CPU only: it decodes images and talks to Triton and
# Milvus over the network; the models run in Triton (see docker-compose.yml).
#
#   docker build -t visual-search/gateway:0.1.0 .
#   docker run -p 50051:50051 -p 9464:9464 -e VSEARCH_TRITON_URLS='["triton:8001"]' \
#       -e VSEARCH_MILVUS_URI=http://standalone:19530 visual-search/gateway:0.1.0
#
# Every setting is a VSEARCH_* environment variable (server/settings.py).

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# ---------------------------------------------------------------------------------------------------- build
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# torch first and pinned, from the CPU index: an unpinned torch from PyPI would pull the multi-GB CUDA build.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

# Dependencies only (pyproject.toml is the one list of them): this layer is rebuilt when they change, not on
# every source edit. With no packages copied yet, `pip install .` installs the dependencies and an empty project.
COPY pyproject.toml README.md ./
RUN pip install .

# The code, then the gRPC stubs generated from the contract straight into site-packages.
COPY extractors extractors
COPY export export
COPY server server
COPY clients clients
COPY proto proto
RUN pip install --no-deps --force-reinstall . \
 && SITE=$(python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])") \
 && python -m grpc_tools.protoc -Iproto --python_out="$SITE" --grpc_python_out="$SITE" \
      proto/visualsearch/v1/search.proto \
 && touch "$SITE/visualsearch/__init__.py" "$SITE/visualsearch/v1/__init__.py" \
 && cd / && python -c "import server.app, visualsearch.v1.search_pb2_grpc"

# -------------------------------------------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 vsearch \
 && useradd --system --uid 10001 --gid vsearch --home-dir /app --create-home --shell /usr/sbin/nologin vsearch
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VSEARCH_HOST=0.0.0.0 \
    VSEARCH_PORT=50051 \
    VSEARCH_METRICS_PORT=9464
WORKDIR /app
USER vsearch

# gRPC (SearchService, health, reflection) and Prometheus metrics
EXPOSE 50051 9464

# SERVING only while Triton and Milvus both answer (server/app.py). Plaintext check: with VSEARCH_TLS_CERT set,
# replace it with a check that uses grpc.ssl_channel_credentials.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, sys, grpc; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; s = g.HealthStub(grpc.insecure_channel('127.0.0.1:' + os.environ.get('VSEARCH_PORT', '50051'))); r = s.Check(h.HealthCheckRequest(service='visualsearch.v1.SearchService'), timeout=4); sys.exit(r.status != h.HealthCheckResponse.SERVING)"]

CMD ["python", "-m", "server"]
