# syntax=docker/dockerfile:1
# The GPU worker: NVIDIA's NGC PyTorch container (CUDA, cuDNN, NCCL, NVIDIA's torch build, TensorRT and
# Torch-TensorRT) with pixelmill[worker,gpu,gpu-metrics] installed on top, running `pixelmill worker`.
#
# Build from the repository root (docker/compose.yaml does this):
#   docker build -f docker/worker.Dockerfile -t pixelmill-worker .
#
# NGC_PYTORCH_TAG: nvcr.io/nvidia/pytorch:<YY.MM>-py3. 25.12 is based on CUDA 13.1 (host driver R580 or
# later). Any tag with Python >= 3.11 works; see docker/README.md for choosing one for an older driver.
ARG NGC_PYTORCH_TAG=25.12-py3

FROM nvcr.io/nvidia/pytorch:${NGC_PYTORCH_TAG}

# Names of pins from the base image's /etc/pip/constraint.txt to drop (space separated), for a dependency
# that needs a newer version than the image was built with. The GPU stack itself can never be unpinned.
ARG UNPIN_BASE_PACKAGES=""

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/pixelmill/src

# How torch is protected: the image's torch is NVIDIA's build (2.x.0a0+<commit>, not on PyPI) and must not
# be replaced by a PyPI wheel. pin_base.py writes one constraints file that pins the installed GPU stack
# (torch*, triton, tensorrt*, numpy, nvidia-*-cuXX) to the exact installed versions, plus NVIDIA's own
# /etc/pip/constraint.txt (present from 25.03 on). Every pip install below runs with it as the only
# constraints file, so a dependency that wants another torch fails the build (ResolutionImpossible) rather
# than swapping it; `pin_base.py check` then verifies nothing protected changed. This is sturdier than
# `pip install --no-deps` (which would silently skip the real dependencies of diffusers, transformers and
# modelopt). The file stays in the image as PIP_CONSTRAINT, so a later `pip install` in a derived image or
# a running container is held to the same pins.
COPY docker/pin_base.py docker/requirements.py docker/
RUN python3 -c "import sys; sys.exit(0 if sys.version_info >= (3, 11) else \
        'pixelmill needs Python >= 3.11; this base image has ' + sys.version.split()[0])" \
 && python3 docker/pin_base.py write /opt/pixelmill/constraints.txt \
        --base-constraints /etc/pip/constraint.txt --unpin ${UNPIN_BASE_PACKAGES}

# Dependencies first, in a layer rebuilt only when pyproject.toml changes.
COPY pyproject.toml ./
RUN python3 docker/requirements.py worker gpu gpu-metrics > /opt/pixelmill/requirements.txt \
 && PIP_CONSTRAINT=/opt/pixelmill/constraints.txt PIP_BREAK_SYSTEM_PACKAGES=1 \
        python3 -m pip install -r /opt/pixelmill/requirements.txt \
 && python3 docker/pin_base.py check /opt/pixelmill/constraints.txt

# The project itself, without dependencies (all installed above). The wheel is built in pip's isolated
# build environment with the constraints cleared: they are for this interpreter's packages, not for the
# setuptools that builds the wheel.
COPY README.md ./
COPY pixelmill ./pixelmill
COPY contract ./contract
COPY producer ./producer
COPY worker ./worker
COPY migrations ./migrations
RUN PIP_CONSTRAINT="" python3 -m pip wheel --no-deps --wheel-dir /tmp/dist . \
 && PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --no-deps /tmp/dist/*.whl \
 && rm -rf /tmp/dist \
 && python3 docker/pin_base.py check /opt/pixelmill/constraints.txt \
 && cd / \
 && python3 -c "import torch, tensorrt, diffusers, transformers, pixelmill.cli; \
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'tensorrt', tensorrt.__version__)"

# A non-root user. /data (PIXELMILL_DATA_DIR), /engines (PIXELMILL_ENGINE_CACHE) and the Hugging Face cache
# are created here, owned by that user, so that named
# volumes mounted there start out writable for it.
RUN useradd --create-home --uid 10001 --user-group --shell /bin/bash pixelmill \
 && mkdir -p /data /models /engines /home/pixelmill/.cache/huggingface \
 && chown -R pixelmill:pixelmill /data /engines /home/pixelmill/.cache

ENV PIP_CONSTRAINT=/opt/pixelmill/constraints.txt \
    PIXELMILL_DATA_DIR=/data

USER pixelmill
WORKDIR /home/pixelmill

# The node name is gpu<N>@<host name> (`pixelmill worker --gpus`); with one GPU per container it is
# gpu0@<container host name>, and `pixelmill ping` expands %h the same way. A worker answers pings from its
# main process, also while its child loads a model or runs a batch.
HEALTHCHECK --interval=30s --timeout=20s --start-period=120s --retries=3 \
    CMD ["pixelmill", "ping", "--node", "gpu0@%h", "--timeout", "10"]

# NVIDIA's entrypoint runs the image's start-up checks (driver and CUDA compatibility, shared memory
# warnings) and then execs its arguments, so pixelmill still runs as the container's main process.
ENTRYPOINT ["/opt/nvidia/nvidia_entrypoint.sh", "pixelmill"]
# One worker on the one GPU this container is given (inside the container it is GPU 0). The model comes
# from PIXELMILL_MODEL (or add --model PATH_OR_ID).
CMD ["worker", "--gpus", "0"]
