# bulkmail image: workers, the CLI, Flower, the API and the dev capture server.
#
#   docker build -t bulkmail .                                   # python:3.12-slim
#   docker build --build-arg BASE_IMAGE=local/python:3.11 .      # any Debian-like image
#                                                                # with python3 + venv
# Two stages: the first builds every wheel into a virtualenv, the second copies only that
# virtualenv onto a fresh base image and runs as an unprivileged user. Nothing secret is
# ever copied or passed as a build argument: passwords and keys are mounted at run time
# (Docker secrets, see docker-compose.yml and docs/security.md).
ARG BASE_IMAGE=python:3.12-slim

FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/venv
WORKDIR /src
# dependencies first (the slow layer), cached until pyproject.toml changes
COPY pyproject.toml README.md ./
RUN mkdir -p config producers workers \
    && touch config/__init__.py producers/__init__.py workers/__init__.py \
    && /opt/venv/bin/pip wheel -q --wheel-dir /wheels . \
    && rm -f /wheels/bulkmail-*.whl
COPY config ./config
COPY producers ./producers
COPY workers ./workers
RUN /opt/venv/bin/pip wheel -q --no-deps --wheel-dir /wheels . \
    && /opt/venv/bin/pip install -q --no-index --find-links /wheels bulkmail

FROM ${BASE_IMAGE}
# a fixed uid/gid so that secret files on the host can be made readable to it alone
ARG APP_UID=10001
RUN groupadd --system --gid "${APP_UID}" bulkmail \
    && useradd --system --uid "${APP_UID}" --gid bulkmail --home-dir /home/bulkmail \
               --create-home --shell /usr/sbin/nologin bulkmail \
    && mkdir -p /etc/bulkmail /var/lib/bulkmail-capture \
    && chown bulkmail:bulkmail /var/lib/bulkmail-capture
COPY --from=build /opt/venv /opt/venv
COPY docker/with-secrets /opt/bulkmail/bin/with-secrets
COPY docker/capture.py /opt/bulkmail/capture.py
COPY config/providers.toml /etc/bulkmail/providers.toml
RUN ln -s with-secrets /opt/bulkmail/bin/bulkmail && ln -s with-secrets /opt/bulkmail/bin/celery
ENV PATH=/opt/bulkmail/bin:/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    BULKMAIL_PROVIDERS=/etc/bulkmail/providers.toml
WORKDIR /home/bulkmail
USER bulkmail:bulkmail
ENTRYPOINT ["with-secrets"]
CMD ["bulkmail", "--help"]
