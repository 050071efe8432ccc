"""RFC 3339 timestamps as status stores them (UTC, `Z`, microseconds kept so order survives a round trip)."""

from __future__ import annotations

from datetime import UTC, datetime


def fmt(moment: datetime) -> str:
    """RFC 3339 in UTC; naive datetimes are taken to be UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse(text: str) -> datetime:
    """The inverse of `fmt`; also accepts Kubernetes' second-precision timestamps."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
