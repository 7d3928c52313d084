# One image for the migrate step, the API and the GPU worker (compose picks the command).
FROM python:3.11-slim

# torch comes from PyTorch's CUDA index; pick the build that matches the host driver.
ARG TORCH_SPEC=torch
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu124

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/cache/huggingface

RUN useradd --create-home --uid 1000 app \
 && mkdir -p /app /data/artifacts /cache/huggingface \
 && chown -R app:app /data /cache
WORKDIR /app

RUN pip install --index-url "$TORCH_INDEX_URL" "$TORCH_SPEC"
COPY pyproject.toml README.md alembic.ini ./
COPY adalora_core ./adalora_core
COPY service ./service
COPY api ./api
COPY worker ./worker
COPY cli ./cli
COPY migrations ./migrations
# Editable, so `adalora-svc migrate` finds migrations/ and alembic.ini beside the code. The trackers extra
# lets job specs name MLflow, W&B and TensorBoard integrations.
RUN pip install -e ".[trackers,s3]"

USER app
EXPOSE 8000
CMD ["adalora-svc", "serve", "--host", "0.0.0.0", "--port", "8000"]
