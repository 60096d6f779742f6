# syntax=docker/dockerfile:1
# One image for every modelloop component; each runs it with a different command (see helm/modelloop):
#   mlflow server ...                               the tracking server and registry
#   python -m modelloop controller --bindings FILE  the deployment controller
#   python -m modelloop serve --model NAME/VERSION  a gRPC scoring server (rendered by the controller)
#   python -m modelloop monitor --model NAME ...    the monitoring job
#   python -m modelloop train --config FILE ...     a (re)training job
#   python -m modelloop webhook register ...        the chart's post-install hook
# The Python dependencies are the package's own (pyproject.toml, plus its `server` extra: MLflow basic auth, S3 artifacts; and the `lightgbm` and `xgboost` extras, so versions logged with those flavours load).
# Runs as the non-root user 10001 and works with a read-only root filesystem (write only to /tmp).

ARG PYTHON_IMAGE=docker.io/library/python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python -m venv /opt/modelloop
COPY pyproject.toml README.md ./
COPY modelloop ./modelloop
RUN /opt/modelloop/bin/pip install ".[server,lightgbm,xgboost]" \
 && /opt/modelloop/bin/pip check \
 && /opt/modelloop/bin/python -m compileall -q /opt/modelloop/lib

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/modelloop/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    OMP_NUM_THREADS=1 \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    MODELLOOP_DATA_DIR=/tmp/modelloop
COPY --from=build /opt/modelloop /opt/modelloop
RUN groupadd --system --gid 10001 modelloop \
 && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin modelloop
USER 10001:10001
WORKDIR /tmp
EXPOSE 5000 8081 8090 9090
ENTRYPOINT ["python", "-m", "modelloop"]
CMD ["--help"]
