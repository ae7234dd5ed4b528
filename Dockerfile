# Conveyor: one image for the gateway and the executor (compose picks the command).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

# Debian's Chromium (driven through Playwright's executable_path; nothing downloads a
# browser at run time) and fonts so pages render with real glyphs.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        chromium \
        fonts-liberation \
        fonts-dejavu-core \
        fonts-noto-color-emoji \
        fonts-noto-cjk \
        ca-certificates \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY pyproject.toml README.md ./
COPY conveyor ./conveyor
COPY gateway ./gateway
COPY executor ./executor
COPY clients ./clients
RUN pip install ./clients/python . && rm -rf /src/build /src/clients/python/build

# A non-root user; /data (state) and /artifacts (screenshots, shared by the gateway
# and the executors through a volume) belong to it.
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin conveyor \
    && mkdir -p /data /artifacts \
    && chown conveyor:conveyor /data /artifacts
USER conveyor
WORKDIR /data

ENV CONVEYOR_DATA_DIR=/data \
    CONVEYOR_ARTIFACT_DIR=/artifacts \
    CONVEYOR_CHROMIUM_PATH=/usr/bin/chromium

EXPOSE 50051
CMD ["conveyor-gateway"]
