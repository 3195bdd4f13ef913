# ScriptServe image: CPU torch by default; see docs/deployment.md for the CUDA variant.
#
#   docker build -t scriptserve .
#   docker run -d -p 127.0.0.1:8000:8000 -v scriptserve-models:/models scriptserve
#
# Build arguments
#   BASE_IMAGE       a Python >= 3.10 image with `python3 -m venv` (default: the official slim one)
#   TORCH_VERSION    pinned torch release; the +cpu local label keeps PyPI's CUDA build out
#   TORCH_INDEX_URL  where torch comes from when no local wheel is offered (PyTorch's CPU index)
# A local torch wheel wins over the index: `--build-context wheels=DIR` replaces the empty
# `wheels` stage below (that is how it builds on machines without download.pytorch.org).
ARG BASE_IMAGE=python:3.11-slim

FROM scratch AS wheels

# ---- build: a virtual environment with the dependencies, and the app as a wheel ----
FROM ${BASE_IMAGE} AS build
ARG TORCH_VERSION=2.13.0+cpu
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
SHELL ["/bin/bash", "-euo", "pipefail", "-c"]
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python3 -m venv /opt/venv
WORKDIR /src

# torch first: the largest layer, and the one that changes least.
RUN --mount=type=bind,from=wheels,target=/wheels \
    if ls /wheels/torch-*.whl >/dev/null 2>&1; then \
      pip install --no-cache-dir --find-links /wheels "torch==${TORCH_VERSION}"; \
    else \
      pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"; \
    fi \
 && site=$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') \
 && rm -rf "$site/torch/test" "$site/torch/include" "$site"/torch/bin/test_* "$site"/torch/bin/*Test \
           "$site"/torch/bin/protoc*
# Headers, C++ test binaries and protoc only serve extension builds and torch's own tests.

# The other dependencies, from pyproject.toml alone (a stub package stands in for the code),
# so that editing app/ does not reinstall them; the s3 extra (boto3) serves s3:// stores.
COPY pyproject.toml ./
# (DL3013: this installs the project itself; pyproject.toml bounds its dependencies.)
# hadolint ignore=DL3013
RUN mkdir app && : >app/__init__.py && : >README.md \
 && pip install --no-cache-dir ".[s3]" \
 && pip uninstall --yes scriptserve \
 && rm -rf app README.md build ./*.egg-info

COPY README.md ./
COPY app ./app
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

# ---- runtime ----
FROM ${BASE_IMAGE} AS runtime
LABEL org.opencontainers.image.title="ScriptServe" \
      org.opencontainers.image.description="A model server for TorchScript"
SHELL ["/bin/bash", "-euo", "pipefail", "-c"]
RUN useradd --uid 10001 --user-group --create-home --home-dir /home/scriptserve \
      --shell /usr/sbin/nologin scriptserve \
 && install -d -o 10001 -g 10001 -m 0750 /models

# A C++ compiler only where uploads compile to AOTInductor on the server (format=aoti):
# `--build-arg WITH_CXX=1` adds g++ (about 200 MB). Serving a ready AOTInductor package, and
# everything else, needs none.
ARG WITH_CXX=0
# hadolint ignore=DL3008
RUN if [ "$WITH_CXX" = 1 ]; then \
      apt-get update && apt-get install -y --no-install-recommends g++ && rm -rf /var/lib/apt/lists/*; \
    fi

# Dependency layer (large, rarely changes), then the code layer (small).
COPY --from=build /opt/venv /opt/venv
# (PYTHONDONTWRITEBYTECODE: keep pip's own bytecode out of this layer; the app's is compiled.)
RUN --mount=type=bind,from=build,source=/dist,target=/dist \
    PYTHONDONTWRITEBYTECODE=1 /opt/venv/bin/pip install --no-cache-dir --no-deps --no-index /dist/scriptserve-*.whl
COPY deploy/docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
COPY deploy/healthcheck.py /usr/local/bin/scriptserve-healthcheck

# Every setting is a SCRIPTSERVE_* variable (README, Configuration); these are the container's
# defaults. The admin token: SCRIPTSERVE_ADMIN_TOKEN, SCRIPTSERVE_ADMIN_TOKEN_FILE (a mounted
# secret), or generated into /models/.admin_token at first start.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    SCRIPTSERVE_HOST=0.0.0.0 \
    SCRIPTSERVE_PORT=8000 \
    SCRIPTSERVE_GRPC_PORT=8001 \
    SCRIPTSERVE_MODEL_STORE=/models \
    SCRIPTSERVE_INSTALL_EXAMPLE=false

USER 10001:10001
WORKDIR /home/scriptserve
VOLUME ["/models"]
EXPOSE 8000 8001
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "/usr/local/bin/scriptserve-healthcheck"]
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["scriptserve", "serve"]
