import numpy as np
import pytest
from sklearn.linear_model import Ridge

from refit.errors import ArtifactError
from refit.flavors import DEFAULT_FLAVOR, FLAVORS, SUFFIXES, load_model, save_model
from refit.spec import ArtifactFormat


def test_every_format_has_a_suffix() -> None:
    assert SUFFIXES == {
        ArtifactFormat.JOBLIB: ".joblib",
        ArtifactFormat.SKOPS: ".skops",
        ArtifactFormat.ONNX: ".onnx",
    }
    assert set(SUFFIXES) == set(ArtifactFormat)


@pytest.mark.parametrize("fmt", [ArtifactFormat.JOBLIB, ArtifactFormat.SKOPS])
def test_save_and_load_through_the_default_flavor(fmt: ArtifactFormat) -> None:
    assert DEFAULT_FLAVOR in FLAVORS
    X = np.arange(12.0).reshape(6, 2)
    model = Ridge().fit(X, X.sum(axis=1))
    loaded = load_model(save_model(model, fmt), fmt)
    assert np.allclose(loaded.predict(X), model.predict(X))


def test_an_unknown_flavor_is_refused() -> None:
    with pytest.raises(
        ArtifactError, match="unknown model flavor 'pmml'; expected one of sklearn, onnx"
    ):
        load_model(b"", ArtifactFormat.JOBLIB, flavor="pmml")


def test_the_onnx_flavor_needs_the_signature_and_stores_models_only_as_given() -> None:
    with pytest.raises(ArtifactError, match="loaded with the signature it was registered with"):
        load_model(b"", ArtifactFormat.ONNX, flavor="onnx")
    with pytest.raises(ArtifactError, match="the onnx flavor is stored as it was given"):
        save_model(Ridge(), ArtifactFormat.ONNX, flavor="onnx")
