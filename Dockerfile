# One image for the worker, the CLI, Flower and the exporter.
#
# Users with Docker Hub: `docker build .` (BASE_IMAGE python:3.11-slim, torch from PyTorch's
# CPU index). Offline (no registry, as on the machines bpt is built on): scripts/build-images
# makes a Debian base with debootstrap (Python and redis-server from Debian's packages) and a
# wheelhouse on the host, and builds this file on them with no network (docs/deployment.md).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
ARG TORCH=torch==2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
WORKDIR /app
RUN python3 -m venv /opt/bpt
ENV PATH=/opt/bpt/bin:$PATH PYTHONUNBUFFERED=1
# wheels/ exists only in scripts/build-images' context; pyproject.toml makes the COPY valid without it.
COPY pyproject.toml wheels* /tmp/wheels/
RUN if ls /tmp/wheels/*.whl >/dev/null 2>&1; then \
      pip install --no-cache-dir --no-index --find-links /tmp/wheels /tmp/wheels/*.whl; \
    else \
      pip install --no-cache-dir "$TORCH" --index-url "$TORCH_INDEX" && pip install --no-cache-dir setuptools wheel; \
    fi
COPY pyproject.toml README.md ./
COPY bpt ./bpt
COPY broker ./broker
COPY workers ./workers
COPY cli ./cli
RUN if ls /tmp/wheels/*.whl >/dev/null 2>&1; then \
      pip install --no-cache-dir --no-index --find-links /tmp/wheels --no-build-isolation --no-deps . ; \
    else \
      pip install --no-cache-dir . ; \
    fi && rm -rf /tmp/wheels
USER nobody
ENTRYPOINT ["bpt"]
