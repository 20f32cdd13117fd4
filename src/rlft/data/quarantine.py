"""Bad dataset rows collected instead of failing on the first one: each is named by file:line with
its problem. The run goes on without them while their share is at most `max_bad_fraction`; every
one is listed in the run's data_report.json either way."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlft.config.loader import ConfigError
from rlft.errors import DataError

log = logging.getLogger(__name__)
REPORT_FILE = "data_report.json"
SHOWN = 10  # problems quoted in an error message (the report has all)


@dataclass
class DataReport:
    """Rows seen and rows rejected while loading a dataset; `notes` holds other counts
    (over-long prompts truncated or skipped, ...) for the report."""

    max_bad_fraction: float = 0.0
    path: Path | None = None  # where `finish` writes the report
    rows: int = 0
    bad: list[dict[str, str]] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_bad_fraction <= 1.0:
            raise ConfigError(f"'data.max_bad_fraction' must be in [0, 1], got {self.max_bad_fraction}")

    def reject(self, where: str, problem: str) -> None:
        self.bad.append({"where": where, "problem": problem})

    @property
    def bad_fraction(self) -> float:
        return len(self.bad) / self.rows if self.rows else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "bad_rows": len(self.bad),
            "bad_fraction": self.bad_fraction,
            "max_bad_fraction": self.max_bad_fraction,
            "problems": self.bad,
            **self.notes,
        }

    def finish(self) -> None:
        """Write the report (when it has a path); raise DataError quoting the first problems when
        the bad share is above max_bad_fraction, else warn about the rows left out."""
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        if not self.bad:
            return
        share = f"{len(self.bad)} of {self.rows} dataset rows are bad ({self.bad_fraction:.1%})"
        listed = "\n  ".join(f"{b['where']}: {b['problem']}" for b in self.bad[:SHOWN])
        more = f"\n  ... and {len(self.bad) - SHOWN} more" if len(self.bad) > SHOWN else ""
        full = f"; all of them are listed in {self.path}" if self.path else ""
        if self.bad_fraction > self.max_bad_fraction:
            needed = math.ceil(self.bad_fraction * 1000) / 1000
            raise DataError(
                f"{share}, above data.max_bad_fraction={self.max_bad_fraction:g}:\n  {listed}{more}\n"
                f"Fix them, or set data.max_bad_fraction={needed:g} to train without them{full}"
            )
        log.warning("%s; training without them:\n  %s%s%s", share, listed, more, full)
