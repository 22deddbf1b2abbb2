# Tunesmith: one image for the API and both kinds of worker; docker-compose.yml picks the command.
# Configuration comes only from environment variables (see docs/service.md).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    OMP_NUM_THREADS=1 \
    TUNESMITH_HOME=/data \
    TUNESMITH_CACHE=/data/cache \
    NUMBA_CACHE_DIR=/data/cache/numba

WORKDIR /app
COPY pyproject.toml README.md ./
COPY model model
COPY service service
COPY worker worker
# torch's CPU build first: from PyPI, torch==2.13.0 resolves to a CUDA build of several GB
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
RUN pip install . \
    && useradd --create-home --uid 1000 tunesmith \
    && mkdir -p /data && chown tunesmith /data

USER tunesmith
VOLUME /data
EXPOSE 8000
# The API by default; the workers run `tunesmith worker --queues generate|train`.
CMD ["gunicorn", "--bind", "0.0.0.0:8000", "--workers", "2", "--worker-class", "gevent", "--worker-connections", "1000", "--keep-alive", "5", "--timeout", "60", "--no-control-socket", "--access-logfile", "-", "service:create_app()"]
