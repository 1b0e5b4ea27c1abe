# mltask-operator image. Multi-stage: wheels are built with the toolchain in `build`; the final
# image has only the Python runtime, a virtual environment with the installed wheels at
# /opt/mltask, and a non-root user.
#
# Reproducible: dependencies are installed at the exact versions the tests ran with
# (requirements.lock, written by `make lock` from the tested venv), on the Python minor version
# the tests ran on. The base image is pinned by exact tag only: its digest could not be looked up
# where this file was written (no registry access); pin it as
# python:3.11.7-slim-bookworm@sha256:<digest> (`docker buildx imagetools inspect`) for builds
# that cannot change under you.
#
# The same file builds on any Debian-like base with python3 and its venv module: the official
# python image (the default) or Debian's own packages (the test harness builds it FROM
# localhost/mltask-python-base:bookworm, made with debootstrap: tests/harness/images.py). Hence
# the venv: Debian's system Python refuses pip installs (PEP 668).
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/mltask
ENV PATH=/opt/mltask/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md requirements.lock ./
COPY operator/ operator/
RUN pip wheel --wheel-dir /wheels --constraint requirements.lock .

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="mltask-operator" \
      org.opencontainers.image.description="Runs ML tasks and pipelines as Argo Workflows" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY --from=build /wheels /wheels
COPY requirements.lock /tmp/requirements.lock
# mltask-operator, kubectl-mltask and mltask-transfer end up in /opt/mltask/bin, first on PATH.
RUN python3 -m venv /opt/mltask \
    && /opt/mltask/bin/pip install --no-index --find-links=/wheels \
        --constraint /tmp/requirements.lock mltask-operator \
    && /opt/mltask/bin/pip uninstall -y pip setuptools wheel \
    && rm -rf /wheels /tmp/requirements.lock \
    && groupadd --gid 65532 mltask \
    && useradd --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin mltask
ENV PATH=/opt/mltask/bin:$PATH
# Kopf and the Python client write nothing to disk; /tmp is an emptyDir in the chart, so the
# root filesystem can be read-only.
USER 65532:65532
EXPOSE 8080 8081
# No CMD: the ports come from MLTASK_METRICS_PORT and MLTASK_HEALTH_PORT (8080, 8081 by
# default); `--liveness=URL` overrides the health endpoint.
ENTRYPOINT ["mltask-operator"]
