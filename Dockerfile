# The hpsearch image: the `hpsearch` command (worker, launch, dashboard, storage-proxy, run, ...)
# and the MLflow server. Used by docker-compose.yml; see docs/distributed.md.
#
#   docker build -t hpsearch .
#   docker build --build-arg TORCH_REQUIREMENT="torch==2.13.0" -t hpsearch .   # another torch
#
# PyPI's Linux torch wheels bring their CUDA libraries: with a GPU reservation (docker-compose.yml)
# and the NVIDIA container toolkit on the host, trials run on CUDA.
FROM python:3.11-slim

ARG TORCH_REQUIREMENT="torch==2.13.0"
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# torch first: the largest layer, rebuilt only when the requirement changes.
RUN pip install "${TORCH_REQUIREMENT}"

WORKDIR /opt/hpsearch
COPY pyproject.toml README.md ./
COPY hpsearch ./hpsearch
# grpcio: workers on grpc:// and `hpsearch storage-proxy`; redis: the Redis journal storage.
RUN pip install . "grpcio>=1.60" "redis>=5"

RUN useradd --create-home --uid 1000 hpsearch \
    && mkdir -p /mlartifacts /specs /work \
    && chown hpsearch:hpsearch /mlartifacts /work
USER hpsearch
WORKDIR /work
# Your own specs and trainers ("module:Class") mounted at /specs are importable.
ENV PYTHONPATH=/specs

ENTRYPOINT ["hpsearch"]
CMD ["--help"]
