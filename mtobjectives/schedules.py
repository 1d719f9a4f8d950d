r"""Per-task schedules of :class:`~mtobjectives.MultiTaskObjective`: a factor for each stage.

A *schedule* is any callable ``schedule(stage) -> float`` that maps the stage :math:`t` of the
objective (1-based; :meth:`MultiTaskObjective.step <mtobjectives.MultiTaskObjective.step>` ends
one) to a factor :math:`\rho_k(t) \ge 0` multiplying the weight of task :math:`k`.
:class:`WarmupSchedule` is the one shipped: a linear ramp from 0, or a switch that turns the
task on after a given stage.
"""

from __future__ import annotations

from collections.abc import Callable

from mtobjectives._validation import check_choice, check_int

__all__ = ["TaskSchedule", "WarmupSchedule"]

#: A schedule: ``schedule(stage)`` -> the factor :math:`\rho_k(t) \ge 0` of the stage (1-based).
TaskSchedule = Callable[[int], float]

WARMUP_MODES: tuple[str, ...] = ("linear", "step")


class WarmupSchedule:
    r"""Warm-up of a task's weight over the first ``stages`` stages.

    .. math::

        \rho_{\text{linear}}(t) = \min\Big(1, \frac{t - 1}{k}\Big), \qquad
        \rho_{\text{step}}(t) = \begin{cases} 0 & t \le k \\ 1 & t > k \end{cases}

    where

    - :math:`t` is the stage (1-based, an epoch when ``step()`` is called once per epoch),
    - :math:`k` is ``stages``; :math:`k = 0` gives :math:`\rho = 1` from the start (no warm-up),
    - ``mode="linear"`` ramps the factor from 0 in stage 1 to 1 in stage :math:`k + 1`,
      ``mode="step"`` keeps the task off (factor 0) for :math:`k` stages, then on.

    Args:
        stages: the number of warm-up stages :math:`k \ge 0`.
        mode: ``"linear"`` (default) or ``"step"``.

    Example:
        >>> from mtobjectives.schedules import WarmupSchedule
        >>> [WarmupSchedule(4)(t) for t in range(1, 7)]
        [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
        >>> [WarmupSchedule(2, mode="step")(t) for t in range(1, 5)]
        [0.0, 0.0, 1.0, 1.0]
    """

    def __init__(self, stages: int, *, mode: str = "linear") -> None:
        stages = check_int("stages", stages)
        if stages < 0:
            raise ValueError(f"stages must be >= 0, got {stages!r}")
        check_choice("mode", mode, WARMUP_MODES)
        self.stages = stages
        self.mode = mode

    def __call__(self, stage: int) -> float:
        """The factor :math:`\\rho(t)` of stage ``stage`` (1-based)."""
        if self.stages == 0 or stage > self.stages:
            return 1.0
        return 0.0 if self.mode == "step" else (stage - 1) / self.stages

    def __repr__(self) -> str:
        return f"WarmupSchedule({self.stages}, mode={self.mode!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, WarmupSchedule):
            return NotImplemented
        return (self.stages, self.mode) == (other.stages, other.mode)

    def __hash__(self) -> int:
        return hash((self.stages, self.mode))
