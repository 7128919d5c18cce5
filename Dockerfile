# syntax=docker/dockerfile:1
# An exporter image: upstream's Jumpstarter image plus this driver package.
#
#   docker build --build-arg PACKAGE_VERSION=1.2.3 -t jumpstarter-driver-template .
#
# It needs BuildKit (Docker's default builder since 23.0; DOCKER_BUILDKIT=1 before that): the install
# step uses RUN --mount, and the syntax line above pins the Dockerfile frontend that provides it.
#
# JUMPSTARTER_VERSION picks the upstream image and must be a release the package's
# jumpstarter* ranges accept: the install keeps that image's Jumpstarter as it is and
# fails, installing nothing, when the ranges do not fit. Never build on :latest, it drifts.
ARG JUMPSTARTER_VERSION=0.9.0
ARG UV_VERSION=0.13.9
ARG PYTHON_VERSION=3.12

FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

# Build stage: only the wheel comes out of it.
FROM python:${PYTHON_VERSION}-slim AS build
# The build context has no git metadata, so hatch-vcs takes the version from here.
ARG PACKAGE_VERSION=0.0.0
ENV SETUPTOOLS_SCM_PRETEND_VERSION=${PACKAGE_VERSION} \
    UV_NO_CACHE=1
COPY --from=uv /uv /usr/local/bin/uv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN uv build --wheel --out-dir /dist .

# Upstream's image keeps Jumpstarter in the /jumpstarter virtual environment (on PATH).
FROM quay.io/jumpstarter-dev/jumpstarter:${JUMPSTARTER_VERSION}
ARG JUMPSTARTER_VENV=/jumpstarter
# The same install step tests/packaging_test.py runs, with the pinned uv of the build stage.
RUN --mount=type=bind,from=build,source=/dist,target=/dist \
    --mount=type=bind,from=uv,source=/uv,target=/opt/uv/uv \
    --mount=type=bind,source=docker/install-wheel.sh,target=/opt/install-wheel.sh \
    UV=/opt/uv/uv UV_NO_CACHE=1 sh /opt/install-wheel.sh "${JUMPSTARTER_VENV}" /dist/*.whl
