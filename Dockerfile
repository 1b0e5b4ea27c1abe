# mltask-operator image. Multi-stage: wheels are built with the toolchain in `build`; the final
# image has only the Python runtime, the installed wheels and a non-root user.
# Base images are pinned by tag; pin by digest in your registry mirror for reproducible builds.
ARG PYTHON_IMAGE=python:3.12.8-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN pip wheel --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="mltask-operator" \
      org.opencontainers.image.description="Runs ML tasks and pipelines as Argo Workflows" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY --from=build /wheels /wheels
RUN pip install --no-index --find-links=/wheels mltask-operator \
    && rm -rf /wheels \
    && pip uninstall -y pip setuptools wheel \
    && groupadd --gid 65532 mltask \
    && useradd --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin mltask
# Kopf and the Python client write nothing to disk; /tmp is an emptyDir in the chart, so the
# root filesystem can be read-only.
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["mltask-operator"]
CMD ["--liveness=http://0.0.0.0:8081/healthz"]
