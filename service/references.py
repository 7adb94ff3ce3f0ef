"""Reference profiles in the service: loading ``--reference`` arguments, checking them
against the served models, and adding percentile / is_outlier to results."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TypeVar

from service.errors import InvalidRequest
from service.schemas import ChatScoreRequest, ReferenceCard, ReferenceList, TextScoreRequest
from service.scoring.reference import (
    ENTROPY_METRICS,
    ProfileError,
    ReferenceProfile,
    load_profile,
)
from service.served import ScoreOutcome, ServedModel


def load_reference_arg(arg: str) -> ReferenceProfile:
    """``NAME=PROFILE.json`` (or just the path: the name is the file's stem)."""
    name, sep, path = arg.partition("=")
    if not sep:
        name, path = Path(arg).stem, arg
    return load_profile(name.strip(), Path(path.strip()).expanduser())


def check_profile(profile: ReferenceProfile, models: Mapping[str, ServedModel]) -> None:
    """Refuse a profile made with a model or revision that is not served, in another dtype
    (bf16 moves bits per char by up to several percent against float32: the percentiles
    would be off), or on an entropy metric its model's backend cannot compute (it sees
    only the top-k of a distribution). A profile that does not record its dtype (made by
    an older client) is taken as it is."""
    served = models.get(profile.model)
    if served is None:
        raise ProfileError(
            f"reference {profile.name!r} was made with model {profile.model!r}, which is not served"
        )
    if served.revision != profile.revision:
        raise ProfileError(
            f"reference {profile.name!r} was made with {profile.model} {profile.revision}, "
            f"but the served revision is {served.revision}: calibrate it again"
        )
    dtype = served.backend.info.dtype
    if profile.dtype is not None and profile.dtype != dtype:
        raise ProfileError(
            f"reference {profile.name!r} was made with {profile.model} in {profile.dtype}, but "
            f"it is served in {dtype} (scores differ by up to several percent between "
            f"dtypes): calibrate it again, or serve it with ?dtype={profile.dtype}"
        )
    if profile.metric in ENTROPY_METRICS and not served.backend.info.full_distribution:
        raise ProfileError(
            f"reference {profile.name!r} is on {profile.metric}, which model {profile.model!r} "
            f"cannot compute on its {served.backend.info.backend} backend (no full distribution)"
        )


def with_reference(outcome: ScoreOutcome, profile: ReferenceProfile | None) -> ScoreOutcome:
    """Each result's percentile and outlier flag for the profile's metric (null when the
    metric is null: no scored token)."""
    if profile is None:
        return outcome
    for result in outcome.response.results:
        result.mark_asked("percentile", "is_outlier")
        value = getattr(result, profile.metric)
        if value is not None:
            result.percentile = profile.percentile(value)
            result.is_outlier = profile.is_outlier(value)
    return outcome


def find_reference(
    references: Mapping[str, ReferenceProfile], name: str | None, model: str
) -> ReferenceProfile | None:
    """The profile a request names (None when it names none); 422 when it is unknown or
    was made with another model."""
    if name is None:
        return None
    profile = references.get(name)
    if profile is None:
        known = ", ".join(sorted(references)) or "none loaded (see --reference)"
        raise InvalidRequest(f"unknown reference {name!r}; known: {known}", param="reference")
    if profile.model != model:
        raise InvalidRequest(
            f"reference {name!r} was made with model {profile.model!r}, not {model!r}",
            param="reference",
        )
    return profile


R = TypeVar("R", TextScoreRequest, ChatScoreRequest)


def for_profile(req: R, profile: ReferenceProfile | None) -> R:
    """The request, asking for entropy too when its reference profile's metric needs it."""
    if profile is None or profile.metric not in ENTROPY_METRICS or req.return_entropy:
        return req
    return req.model_copy(update={"return_entropy": True})


def reference_list(profiles: Iterable[ReferenceProfile]) -> ReferenceList:
    """The cards of the loaded reference profiles, as ``GET /v1/references`` lists them."""
    cards = [
        ReferenceCard(
            name=p.name,
            model=p.model,
            revision=p.revision,
            metric=p.metric,
            threshold=p.threshold,
            count=p.count,
        )
        for p in profiles
    ]
    return ReferenceList(data=cards)
