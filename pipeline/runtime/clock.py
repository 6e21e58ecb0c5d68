"""The one clock: the system's, or a file's when ``DROPSHIP_CLOCK_FILE`` is set.

Deadlines (payment window, supplier SLAs) are the only thing that reads the
clock; event-driven decisions use the time of their cause. A test moves time
by writing an RFC 3339 timestamp into the file (:func:`set_file_time`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from pipeline.runtime.settings import Settings


def now(settings: Settings) -> datetime:
    """The current time (timezone-aware UTC). An unreadable clock file is an error."""
    if settings.clock_file is None:
        return datetime.now(UTC)
    text = settings.clock_file.read_text().strip()
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"{settings.clock_file}: time {text!r} has no timezone")
    return moment.astimezone(UTC)


def set_file_time(path: Path, moment: datetime) -> None:
    """Move a file clock to ``moment`` (atomically: readers never see half a time)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(moment.isoformat())
    tmp.replace(path)
