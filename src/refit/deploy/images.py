"""The image a project's pods run on Kubernetes, whether by Kustomize or Helm: the project's
own, or refit's of this version with the spec from a ConfigMap; either tagged, never `latest`."""

from __future__ import annotations

from refit import __version__
from refit.deploy.compose import check_image
from refit.errors import SpecError
from refit.project import Project
from refit.spec import SPEC_FILE


def default_image() -> str:
    """The image the pods run when `--image` is not given: refit's own, of this version."""
    return f"refit:{__version__}"


def check_tagged_image(image: str) -> str:
    """`image` if it is an image reference with a tag other than `latest`; else ValueError."""
    check_image(image)
    tag = image.rsplit("/", 1)[-1].partition(":")[2]
    if not tag or tag == "latest":
        raise ValueError(
            f"{image!r} has {'no tag' if not tag else 'the tag latest'}: a cluster must run "
            "one known build on every node: expected NAME:TAG, e.g. registry.example.com/ml/"
            f"churn:1.2 or {default_image()}"
        )
    return image


def pod_image(project: Project, image: str | None) -> str:
    """The image a project's pods run, on Kubernetes whether by Kustomize or Helm: `image`
    (with a tag other than latest), or refit's own with the spec from a ConfigMap, which a
    project whose spec names its own modules (a function, hooks) cannot use."""
    spec = project.spec
    if image is None:
        for field, path in spec.model.code_paths.items():
            raise SpecError(
                f"{project.root / SPEC_FILE}: {field}: got {path!r}: its "
                "modules must be in the image, and refit's own image holds only refit.yaml: "
                "give --image with the project's image (FROM refit, plus the project folder)"
            )
        image = default_image()
    try:
        return check_tagged_image(image)
    except ValueError as exc:
        raise SpecError(f"--image: {exc}") from None
