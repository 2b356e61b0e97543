# locktwin: one image for every bridge (`run <vendor>`) and simulator (`simulate <vendor>`).
#   docker build -t locktwin .        (compose.yaml builds it for you)
FROM python:3.11-slim

# The uid the bridges run as. compose mounts file secrets with their host owner and mode, so
# mosquitto/secrets/bridge.password must belong to this uid (make-passwords does that when run as
# root) or the image must be built with your own uid: LOCKTWIN_UID=$(id -u) docker compose build.
ARG LOCKTWIN_UID=10001

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY contracts/ contracts/
COPY twin/ twin/
COPY bridges/ bridges/
RUN pip install . && rm -rf /src
COPY deploy/healthcheck.py /usr/local/lib/locktwin/healthcheck.py

RUN groupadd --system --gid "$LOCKTWIN_UID" locktwin \
    && useradd --system --uid "$LOCKTWIN_UID" --gid locktwin --home-dir /var/lib/locktwin \
        --no-create-home --shell /usr/sbin/nologin locktwin \
    && mkdir -p /var/lib/locktwin /etc/locktwin \
    && chown locktwin:locktwin /var/lib/locktwin

# data_dir: one SQLite store per vendor under it; compose mounts a named volume here
ENV LOCKTWIN_DATA_DIR=/var/lib/locktwin
WORKDIR /var/lib/locktwin
VOLUME ["/var/lib/locktwin"]
USER locktwin
# simulators listen here (`simulate <vendor> --host 0.0.0.0 --port 8080`); bridges listen nowhere
EXPOSE 8080

ENTRYPOINT ["locktwin"]
CMD ["--help"]
