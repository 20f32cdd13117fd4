"""Non-finite steps: skipped and counted, and the run stopped after too many in a row."""

from __future__ import annotations

import math

from rlft.errors import RunError


class NonFiniteError(RunError):
    """Too many consecutive optimizer steps had a non-finite loss or grad norm."""


class NonFiniteGuard:
    """Skips optimizer steps whose loss or grad norm is not finite; aborts after `limit` in a row."""

    def __init__(self, limit: int):
        self.limit = limit
        self.consecutive = 0
        self.skipped = 0

    def check(self, loss: float, grad_norm: float) -> bool:
        if math.isfinite(loss) and math.isfinite(grad_norm):
            self.consecutive = 0
            return True
        self.consecutive += 1
        self.skipped += 1
        if self.consecutive >= self.limit:
            raise NonFiniteError(
                f"{self.consecutive} consecutive steps with non-finite loss/grad norm "
                f"(last loss={loss}, grad_norm={grad_norm}); lower the LR or check the rewards"
            )
        return False

    def state_dict(self) -> dict[str, int]:
        return {"consecutive": self.consecutive, "skipped": self.skipped}

    def load_state_dict(self, s: dict[str, int]) -> None:
        self.consecutive, self.skipped = int(s["consecutive"]), int(s["skipped"])
