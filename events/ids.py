"""Deterministic event ids: an event derived from another carries an id computed
from its cause, so reprocessing after a crash emits the very same event."""

from __future__ import annotations

import uuid
from typing import Final

#: Namespace of every derived id (a fixed, random UUID: never change it).
NAMESPACE: Final = uuid.UUID("5b0d7c1e-3f2a-4c51-9a7e-0d5f1e2b8c43")


def derived_id(cause_id: str, kind: str) -> str:
    """The id of the event of ``kind`` caused by event ``cause_id`` (uuid5)."""
    return str(uuid.uuid5(NAMESPACE, f"{cause_id}\x1f{kind}"))
