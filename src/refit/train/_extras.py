"""Estimators from refit's extras (`pip install 'refit[xgboost]'`, `'refit[lightgbm]'`): the
install hint when the package is missing, and the class refit builds for XGBoost's classifier
(`refit.flavors._xgboost`, which learns any labels)."""

from __future__ import annotations

import sys

from refit.errors import SpecError

#: The packages behind estimators that refit installs as an extra: package -> extra.
EXTRAS = {"xgboost": "xgboost", "lightgbm": "lightgbm"}


def missing_extra(field: str, path: str, package: str) -> SpecError:
    """The error for `path` (in spec field `field`), whose `package` is not installed."""
    return SpecError(f"{field} {path} needs {package}: pip install 'refit[{EXTRAS[package]}]'")


def stand_in(cls: type) -> type:
    """The class refit builds for `cls`: XGBoost's classifier learns any labels here, every
    other class is itself."""
    xgboost = sys.modules.get("xgboost")
    if xgboost is not None and cls is getattr(xgboost, "XGBClassifier", None):
        from refit.flavors._xgboost import XGBClassifier

        return XGBClassifier
    return cls
