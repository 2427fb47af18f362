FROM python:3.11-slim
WORKDIR /app
COPY . /app
# linetrace[worker,console] with every dependency pinned and hash-checked by requirements.lock
RUN PIP_NO_CACHE_DIR=1 python .ci/install-extras worker,console
ENTRYPOINT []
