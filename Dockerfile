# The gateway image: every process of a deployment (serve, settle, migrate, payouts run, audit)
# runs from it. See docs/deployment.md.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, pinned with hashes: this layer is rebuilt only when the lock changes.
# (The lock also pins the development tools: they come along until it is split.)
COPY requirements.lock ./
RUN pip install --require-hashes --no-deps -r requirements.lock

# The package itself, without resolving anything again (setuptools comes from the lock).
COPY pyproject.toml README.md ./
COPY aichat_gateway ./aichat_gateway
RUN pip install --no-deps --no-build-isolation . && rm -rf build ./*.egg-info

RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin aichat
USER aichat

# Containers are reached from outside their loopback; `serve` binds 127.0.0.1 by default.
ENV GATEWAY_HOST=0.0.0.0
EXPOSE 8000

ENTRYPOINT ["aichat-gateway"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
