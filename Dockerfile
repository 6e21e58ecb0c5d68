# The dropship worker / CLI image used by docker-compose.yml.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY events ./events
COPY agents ./agents
COPY projections ./projections
RUN pip install --no-cache-dir . \
 && useradd --system --no-create-home dropship
USER dropship
ENTRYPOINT []
CMD ["dropship", "worker"]
