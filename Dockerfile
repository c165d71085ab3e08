# imagine-bot: a slim, non-root image. The database lives on the /data volume.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DATABASE_URL=sqlite:////data/imagine.db \
    HEALTH_PORT=8080 \
    HEALTH_HOST=127.0.0.1 \
    MPLCONFIGDIR=/tmp/matplotlib

WORKDIR /app

# Dependencies first, in their own layer, so a code change does not reinstall them.
COPY pyproject.toml README.md ./
RUN mkdir -p bot/storage/migrations cogs \
    && touch bot/__init__.py cogs/__init__.py \
    && pip install . \
    && pip uninstall -y imagine-bot

COPY bot ./bot
COPY cogs ./cogs
RUN pip install --no-deps . \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin imagine \
    && mkdir -p /data \
    && chown imagine /data

USER 10001
VOLUME ["/data"]

# /healthz answers 200 only while the gateway is connected and the database answers.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status == 200 else 1)"]

CMD ["python", "-m", "bot"]
