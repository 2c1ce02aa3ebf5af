# syntax=docker/dockerfile:1
# Sluice operator image: `make image` (docker build -t sluice-operator:<version> .).
# Two stages: the builder installs sluice-backpressure[operator] into a virtualenv; the runtime stage gets
# only that virtualenv on a slim Python, runs as a numeric non-root user and works with a read-only root
# filesystem (Pod Security Standard "restricted").
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/sluice
WORKDIR /src
# Only what the package build needs (see .dockerignore); README.md is the package's readme.
COPY pyproject.toml README.md ./
COPY operator ./operator
COPY sdk ./sdk
# The operator extra only: no producer/demo/dev dependencies in the image. pip compiles bytecode here,
# since the read-only root filesystem prevents it at run time.
RUN /opt/sluice/bin/pip install --upgrade pip \
 && /opt/sluice/bin/pip install '.[operator]' \
 && /opt/sluice/bin/sluice --help >/dev/null

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="sluice-operator" \
      org.opencontainers.image.description="Sluice: Kafka backpressure and circuit breaking driven by consumer lag" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /opt/sluice /opt/sluice
ENV PATH=/opt/sluice/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
# A numeric user (no /etc/passwd entry needed), so Kubernetes can verify runAsNonRoot.
USER 65532:65532
WORKDIR /tmp
EXPOSE 8080
ENTRYPOINT ["sluice"]
CMD ["run"]
