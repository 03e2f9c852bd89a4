# One image for every Kezek service; the SERVICE environment variable picks which one a
# container runs (see deploy/docker-entrypoint.sh and docker-compose.yml).
FROM python:3.11-slim

# The code runs from /app (its Alembic migrations included); `pip install .` supplies the
# dependencies and the `kezek` command.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app \
    KEZEK_CONFIG=/app/config.yaml

RUN groupadd --system --gid 10001 kezek \
 && useradd --system --uid 10001 --gid kezek --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin kezek

WORKDIR /app
COPY pyproject.toml config.yaml ./
COPY services ./services
RUN pip install . \
 && rm -rf build ./*.egg-info \
 && mkdir -p var \
 && chown kezek:kezek var
COPY deploy/docker-entrypoint.sh /usr/local/bin/kezek-entrypoint
RUN chmod 0755 /usr/local/bin/kezek-entrypoint

# numeric, so Kubernetes can verify runAsNonRoot
USER 10001:10001
# gateway HTTP; the metrics/health ports of the services
EXPOSE 8000 9101-9106
ENTRYPOINT ["/usr/local/bin/kezek-entrypoint"]
