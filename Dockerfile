# Cascade image: the CLI, the Celery tasks and the migrations in one image.
#
#   docker build -t cascade:local .                  # the app image (default command: cascade --help)
#   docker build --target flower -t cascade-flower:local .   # the same plus Flower
#   docker run --rm cascade:local cascade submit --help
#
# docker-compose.yml builds both targets and runs every service from them.

FROM python:3.11-slim AS app

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Copy only what the package needs (not .venv, .git or local databases); README.md* is a
# glob so that a checkout without it still builds. The build folder is removed afterwards:
# the installed package is all the image needs.
WORKDIR /src
COPY pyproject.toml constraints.txt README.md* ./
COPY cascade/ cascade/
COPY common/ common/
COPY models/ models/
COPY migrations/ migrations/
COPY tasks/ tasks/
COPY workers/ workers/
# constraints.txt pins every dependency to what CI tested
RUN pip install -c constraints.txt . && cd / && rm -rf /src

# Run as an unprivileged user; /app is its writable working directory (the embedded
# SQLite default and `cascade report` output land here when no volume is mounted).
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin cascade \
    && mkdir /app && chown cascade:cascade /app
WORKDIR /app
COPY --chown=cascade:cascade examples/ examples/
USER cascade

CMD ["cascade", "--help"]


# Flower (Celery monitoring) for the compose `flower` service, kept out of the app image.
FROM app AS flower
USER root
RUN pip install "flower==2.2.0"
# /healthcheck answers once Flower serves; compose polls it
HEALTHCHECK --interval=30s --timeout=5s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5555/healthcheck', timeout=4)"
USER cascade
EXPOSE 5555
CMD ["celery", "-A", "tasks.app", "flower", "--port=5555"]


# The default target (a plain `docker build .`) is the app image.
FROM app AS default
