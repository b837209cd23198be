"""How a server pod is run, in numbers every deployment level shares (Kubernetes manifests,
the Helm chart), so that its probes and its shutdown agree with what `refit serve` does.

On SIGTERM, `refit serve` stops accepting, drains the requests in flight for at most
`DRAIN_SECONDS`, and exits 0. Kubernetes removes a terminating pod from its Service's endpoints
while it sends SIGTERM, and the two race: a `preStop` sleep of `PRESTOP_SECONDS` keeps the pod
answering until the endpoint removal has spread, then the drain runs; the grace period covers
both, with a margin, before SIGKILL.
"""

from __future__ import annotations

DRAIN_SECONDS = 30
"""How long `refit serve` drains the requests in flight after SIGTERM (uvicorn's graceful
shutdown); SageMaker's SIGKILL comes 30 s after its SIGTERM."""

PRESTOP_SECONDS = 5
"""How long a terminating pod keeps answering before SIGTERM, while endpoints are updated."""

GRACE_SECONDS = PRESTOP_SECONDS + DRAIN_SECONDS + 5
"""`terminationGracePeriodSeconds`: the preStop sleep, the drain, and a margin to exit."""

LIVE_PATH = "/health/live"
"""200 while the process answers: the liveness probe."""

READY_PATH = "/health/ready"
"""200 only when a verified model is loaded and the server is not draining: the readiness
probe."""

WORKER_STARTUP_SECONDS = 120
"""How long a worker may take to import its libraries and load a model before it answers
(uvicorn's worker health check; a startup probe's budget)."""
