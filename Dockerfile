# refit: one image for every role, chosen by its command (serve, scheduler, ingest, train, ...).
#   docker build -t refit .
# A project's image is `FROM refit` plus `COPY . /project`; README.md, "Containers", has the
# roles and their REFIT_* variables.

FROM python:3.11-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1
# `python3 -m venv`, not a path to python: the official image has it in /usr/local/bin,
# Debian's python3 in /usr/bin; the venv's own binaries are used from here on.
RUN python3 -m venv /opt/venv
WORKDIR /src

# The dependencies first, read from pyproject.toml, so that this layer (most of the image)
# is rebuilt only when they change, not on every change of refit's code (--chmod: nor when a
# checkout's umask gave the file other permissions).
COPY --chmod=644 pyproject.toml ./
RUN --mount=type=cache,target=/root/.cache/pip \
    /opt/venv/bin/python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" >/tmp/requirements.txt \
    && /opt/venv/bin/pip install --requirement /tmp/requirements.txt

COPY README.md ./
COPY src ./src
RUN --mount=type=cache,target=/root/.cache/pip \
    /opt/venv/bin/pip wheel --no-deps --wheel-dir /wheels .


FROM python:3.11-slim-bookworm

RUN groupadd --system --gid 10001 refit \
    && useradd --system --uid 10001 --gid refit --create-home --shell /usr/sbin/nologin refit \
    && install --directory --owner=refit --group=refit /project
# The dependencies, then refit's own wheel: a change of refit's code adds a small layer, not
# another copy of every library. The wheel is copied, not bind-mounted: buildah's layer cache
# does not see a changed file behind a bind mount, and would keep installing the old wheel.
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /wheels /tmp/wheels
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps /tmp/wheels/*.whl \
    && rm -r /tmp/wheels \
    && /opt/venv/bin/refit --help >/dev/null

# Inside a container the server listens on every interface, on port 8000, whatever refit.yaml
# says: `docker run -e REFIT_SERVE__PORT=...` changes it (and the HEALTHCHECK follows).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    REFIT_SERVE__HOST=0.0.0.0 \
    REFIT_SERVE__PORT=8000

# Numeric, so that Kubernetes can check runAsNonRoot without reading the image's passwd.
USER 10001:10001
WORKDIR /project
EXPOSE 8000

# No curl in the image: Python asks /health/live. A container of another role (ingest, train,
# scheduler) is healthy while its process runs: the probe only checks `refit serve`.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request\nif b'serve' not in open('/proc/1/cmdline', 'rb').read().split(b'\\0'): sys.exit(0)\nurllib.request.urlopen('http://127.0.0.1:%s/health/live' % os.environ.get('REFIT_SERVE__PORT', '8000'), timeout=4)"]

ENTRYPOINT ["refit"]
CMD ["serve"]
