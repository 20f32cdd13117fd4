"""Adaptive KL coefficient (Ziegler et al. 2019, sec. 2.2, eq. 6)."""

from __future__ import annotations


class AdaptiveKLController:
    """beta <- beta * (1 + K_beta * e), e = clip(KL / target - 1, -0.2, 0.2), K_beta = n / horizon,
    with n the sequences seen this step. target <= 0 keeps beta fixed."""

    def __init__(self, init_coef: float, target: float, horizon: int):
        self.value = init_coef
        self.target = target
        self.horizon = horizon

    def update(self, measured_kl: float, n_sequences: int) -> float:
        if self.target > 0:
            error = min(max(measured_kl / self.target - 1.0, -0.2), 0.2)
            self.value *= 1.0 + error * n_sequences / self.horizon
        return self.value

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])
