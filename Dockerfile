# The dropship worker / CLI image used by docker-compose.yml.
#
# It runs as the unprivileged user dropship, which can write only its data folder
# /var/lib/dropship (Faust keeps a <group>-data folder there): /app, where the
# sources are copied, and the user's home (never created) are read-only to it.
# tests/e2e/test_deploy_path.py runs every compose service as this image would
# (its user's rights, working directory, environment) without a Docker engine.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY events ./events
COPY agents ./agents
COPY projections ./projections
COPY simulator ./simulator
RUN pip install --no-cache-dir . \
 && useradd --system --no-create-home dropship \
 && install -d -o dropship -g dropship -m 0750 /var/lib/dropship
ENV DROPSHIP_DATA_DIR=/var/lib/dropship
USER dropship
EXPOSE 6066
ENTRYPOINT []
CMD ["dropship", "worker"]
