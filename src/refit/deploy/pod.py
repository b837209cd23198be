"""How a server pod is run, in numbers every deployment level shares (Kubernetes manifests,
the Helm chart), so that its probes and its shutdown agree with what `refit serve` does.

On SIGTERM, `refit serve` turns not ready at once, keeps accepting and answering for
`DRAIN_DELAY_SECONDS` (every answer with `Connection: close`), then stops listening, drains the
requests in flight for at most `DRAIN_SECONDS`, and exits 0. Kubernetes removes a terminating
pod from its Service's endpoints while it sends SIGTERM, and the two race: a `preStop` sleep of
`PRESTOP_SECONDS` keeps the pod answering until the endpoint removal has spread, then the
server's own delay and drain run; the grace period covers all three, with a margin, before
SIGKILL. The server's numbers are the defaults of `serve.drain_delay` and `serve.grace_period`.
"""

from __future__ import annotations

from refit.spec import ServeSpec

_SERVE = ServeSpec.model_fields

DRAIN_DELAY_SECONDS = int(_SERVE["drain_delay"].default)
"""How long `refit serve` keeps accepting and answering after SIGTERM, while clients and load
balancers learn that it is going (`serve.drain_delay`)."""

DRAIN_SECONDS = int(_SERVE["grace_period"].default)
"""How long `refit serve` then drains the requests in flight (`serve.grace_period`); with the
delay, 30 s: SageMaker's SIGKILL comes 30 s after its SIGTERM."""

PRESTOP_SECONDS = 5
"""How long a terminating pod keeps answering before SIGTERM, while endpoints are updated."""

GRACE_SECONDS = PRESTOP_SECONDS + DRAIN_DELAY_SECONDS + DRAIN_SECONDS + 5
"""`terminationGracePeriodSeconds`: the preStop sleep, the delay, the drain, and a margin."""

STOP_SECONDS = DRAIN_DELAY_SECONDS + DRAIN_SECONDS + 5
"""Compose's `stop_grace_period` of a server (docker's default, 10 s, would kill it while it
drains): the delay, the drain, and a margin."""

LIVE_PATH = "/health/live"
"""200 while the process answers: the liveness probe."""

READY_PATH = "/health/ready"
"""200 only when a verified model is loaded and the server is not draining: the readiness
probe."""

WORKER_STARTUP_SECONDS = 120
"""How long a worker may take to import its libraries and load a model before it answers
(uvicorn's worker health check; a startup probe's budget)."""

FIRST_LOAD_SECONDS = 60
"""How long a starting worker waits for production to load before it serves anyway (answering
503 until the load ends): within `WORKER_STARTUP_SECONDS`, with room for the imports."""
