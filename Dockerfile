# image-search-service: API, workers and the CLI in one CPU-only image.
#
#   docker build -t image-search-service .
#   docker run --rm image-search-service --help
#
# torch and torchvision come together from PyTorch's CPU wheel index (a matching pair;
# the default index would pull ~5 GB of CUDA libraries a CPU box never uses).

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --upgrade pip \
 && pip install --index-url "${TORCH_INDEX_URL}" torch torchvision
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# torch/torchvision are already satisfied, so pip keeps the CPU builds.
RUN pip install . \
 && python -c "import torch, torchvision, open_clip, qdrant_edge, rq, onnxruntime"

FROM ${PYTHON_IMAGE} AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 1000 app \
 && mkdir -p /data /models \
 && chown app:app /data /models
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DATA_DIR=/data \
    MODEL_CACHE_DIR=/models \
    HF_HOME=/models/hf \
    DEVICE=cpu
USER app
WORKDIR /home/app
VOLUME ["/data", "/models"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8000/health || exit 1
ENTRYPOINT ["image-search"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
