# syncd as a service: `syncd run` on the config mounted at /etc/syncd/syncd.toml.
#   docker build -t syncd .
#   docker run -d -v $PWD/syncd.toml:/etc/syncd/syncd.toml:ro -v syncd-data:/data \
#     -e JIRA_EMAIL -e JIRA_API_TOKEN -p 9464:9464 syncd
# Secrets come from the environment or from files (Docker/Kubernetes secrets + token_file);
# the warehouse (SQLite by default) lives on the /data volume. The config's
# `[daemon] listen` must be "0.0.0.0:9464" for the port to be reachable from outside.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY syncd ./syncd
COPY connectors ./connectors
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin syncd \
    && mkdir -p /data /etc/syncd \
    && chown syncd /data

USER 10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 9464

HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=4)"]

ENTRYPOINT ["syncd"]
CMD ["run", "-c", "/etc/syncd/syncd.toml"]
