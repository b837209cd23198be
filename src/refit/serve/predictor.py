"""Predictors: loaded, verified, warmed-up models in a server's memory.

`load_predictor` is the only way a model version gets into a server: check that the version
may load at all (its manifest's HMAC when a signing key is set, its artifact paths inside the
store, its format allowed), fetch the artifact, check its sha256, deserialise it, check its
signature, and call it on a sample built from that signature. Any failing step refuses the
version with a `RefitError` naming the step. The version's flavor (`refit.flavors`) makes
its predictor and chooses what runs it: ONNX Runtime where the version's graph passed its
parity check, which answers a row in tens of microseconds instead of a millisecond; the model
itself otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from refit.artifacts import ArtifactStore, confined
from refit.errors import ArtifactPathError, RefitError, UntrustedVersionError
from refit.flavors import get_flavor
from refit.predictions import Predictor, columns_of
from refit.registry import ModelVersionRow
from refit.registry.signing import check_signed
from refit.registry.tables import utcnow
from refit.signature import Signature, sample_frame
from refit.spec import ArtifactFormat


@dataclass(frozen=True)
class LoadPolicy:
    """What a server may load: with `signing_key`, only versions signed with it; with
    `allow_pickle` false, no pickle (joblib) artifact; skops artifacts holding, beyond the
    built-in trusted types, `trusted_types` (`model.trusted_types`)."""

    signing_key: bytes | None = None
    allow_pickle: bool = True
    trusted_types: tuple[str, ...] = ()


DEFAULT_POLICY = LoadPolicy()
"""Without a signing key: every version whose artifacts match their sha256 loads."""


@dataclass
class LoadedModel:
    """A version in memory, ready to answer: its predictor and what it is."""

    name: str
    version: int
    signature: Signature
    predictor: Predictor
    metrics: dict[str, Any]
    metric: str
    snapshot_id: str
    artifact_sha256: str
    runtime: str
    """What runs it (see `refit.flavors.RUNTIMES`)."""
    onnx: str | None = None
    """Why ONNX is not used, when it is not (as a client may read it)."""
    onnx_error: str | None = None
    """The full error of an ONNX artifact that failed to load, served natively instead."""
    loaded_at: datetime = field(default_factory=utcnow)

    @property
    def withholds(self) -> bool:
        """Whether its answers may withhold rows (`Predictions.withheld`): a predictor that
        may (one running a version's `model.postprocess`) says so with `withholds = True`."""
        return bool(getattr(self.predictor, "withholds", False))

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "runtime": self.runtime,
            "onnx": self.onnx,
            "loaded_at": self.loaded_at.isoformat(),
            "snapshot_id": self.snapshot_id,
            "metric": self.metric,
            "metrics": self.metrics,
            "artifact_sha256": self.artifact_sha256,
            "signature": self.signature.to_dict(),
        }


def load_predictor(
    row: ModelVersionRow,
    store: ArtifactStore,
    contract: Signature | None = None,
    policy: LoadPolicy = DEFAULT_POLICY,
) -> LoadedModel:
    """Fetch, verify, load, check and warm up a version; refuse it at the first failure.

    `contract` is the input signature the server already answers with: a version whose
    inputs differ is refused, since clients were promised the served schema. Nothing of an
    artifact is read before the version passes `policy` and its paths are inside the store.
    """
    where = f"{row.name} v{row.version}"
    admit(row, policy)
    signature = Signature.from_dict(row.signature)
    if contract is not None and _inputs(signature) != _inputs(contract):
        raise RefitError(
            f"{where} takes different inputs ({', '.join(signature.names)}) from the ones "
            f"this server answers with ({', '.join(contract.names)}); restart the server to "
            "serve the new schema"
        )
    flavor = get_flavor(row.flavor)

    def fetch(uri: str, sha256: str) -> bytes:
        return _fetch(store, uri, sha256, where)

    ready = flavor.serve(row, signature, fetch, policy.trusted_types)
    predictor = ready.predictor
    sample = columns_of(sample_frame(signature, n=3), signature.names)
    try:
        warm = predictor.predict(sample)
    except Exception as exc:
        raise RefitError(
            f"{where} failed its warm-up on a sample built from its signature: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if len(warm) != len(sample[0]):
        raise RefitError(f"{where} gave {len(warm)} predictions for {len(sample[0])} rows")
    return LoadedModel(
        name=row.name,
        version=row.version,
        signature=signature,
        predictor=predictor,
        metrics=dict(row.metrics),
        metric=row.metric,
        snapshot_id=row.snapshot_id,
        artifact_sha256=row.artifact_sha256,
        runtime=ready.runtime,
        onnx=ready.note,
        onnx_error=ready.error,
    )


def admit(row: ModelVersionRow, policy: LoadPolicy) -> None:
    """Refuse a version that `policy` does not let load, or whose artifact paths leave the
    store, from its registry row alone: before a byte of any artifact is read."""
    where = f"{row.name} v{row.version}"
    check_signed(row, policy.signing_key)
    for _, uri, _ in get_flavor(row.flavor).artifacts(row):
        try:
            confined(uri)
        except ArtifactPathError as exc:
            raise ArtifactPathError(f"{where} is refused: {exc}") from None
    if row.format == ArtifactFormat.JOBLIB.value and not policy.allow_pickle:
        raise UntrustedVersionError(
            f"{where} is a pickle (model.format joblib), which runs code when it is loaded, "
            "and serve.allow_pickle is false: retrain it with model.format: skops"
        )


def _fetch(store: ArtifactStore, uri: str, sha256: str, where: str) -> bytes:
    try:
        return store.get(uri, sha256)
    except ArtifactPathError as exc:
        raise ArtifactPathError(f"{where} is refused: {exc}") from None


def _inputs(signature: Signature) -> list[tuple[str, str, bool]]:
    return [(c.name, c.type.value, c.nullable) for c in signature.inputs]
