# imagine-bot: a slim, non-root image. The database lives on the /data volume.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DATABASE_URL=sqlite:////data/imagine.db

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

CMD ["python", "-m", "bot"]
