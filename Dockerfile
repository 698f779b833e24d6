# syncd as a container: mount the config and pass secrets as env vars or files.
#   docker build -t syncd .
#   docker run --rm -v $PWD/syncd.toml:/etc/syncd/syncd.toml -e JIRA_API_TOKEN syncd sync -c /etc/syncd/syncd.toml
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY syncd ./syncd
COPY connectors ./connectors
RUN pip install --no-cache-dir . && useradd --system --uid 10001 syncd
USER syncd
WORKDIR /data
ENTRYPOINT ["syncd"]
CMD ["--help"]
