# One image for every service (code server, webserver, daemon, API, emulator, migrations).
# Build stage: uv installs exactly uv.lock into /app/.venv. Runtime stage: no build tools, non-root.
FROM python:3.11-slim AS build
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PROJECT_ENVIRONMENT=/app/.venv
RUN pip install --no-cache-dir uv==0.13.9
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY common ./common
COPY crypto_pipeline ./crypto_pipeline
COPY warehouse ./warehouse
COPY api ./api
COPY emulator ./emulator
COPY scripts ./scripts
RUN uv sync --frozen --no-dev --no-editable

FROM python:3.11-slim AS runtime
# The code belongs to root, so the service user can read it but not change it; user `app` writes
# only to Dagster's instance folder and to /app/.data (the settings' data folder, where a volume
# can mount: a new named volume takes this folder's owner).
RUN useradd --create-home --uid 10001 app \
 && mkdir -p /opt/dagster/home /app/.data/history && chown app /opt/dagster/home /app/.data /app/.data/history
WORKDIR /app
COPY --from=build /app /app
COPY deploy/dagster.yaml deploy/workspace.yaml alembic.ini /opt/dagster/home/
# Each service's logging file (docker-compose.yml mounts ./config/logging over it).
COPY config ./config
# LOG_FILE=off: every service logs to its console only, which the container's log collects.
ENV PATH=/app/.venv/bin:$PATH \
    DAGSTER_HOME=/opt/dagster/home \
    LOG_FILE=off \
    PYTHONUNBUFFERED=1
USER app
EXPOSE 3000 4000 6667 8765
CMD ["python", "-m", "uvicorn", "api.main:app", "--host", "0.0.0.0", "--port", "6667"]
