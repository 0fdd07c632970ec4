"""``--mode`` presets and how explicit options win over them (pure, no daemon)."""

from __future__ import annotations

import pytest

from cfn_client.wire.errors import InvalidArgs
from cfn_client.wire.schema.loop import MODES, SIZING, LoopStartArgs
from cfn_daemon.cfnloop.runner import _limits, _sized
from cfn_daemon.settings.schema import LoopConfig


@pytest.mark.parametrize(
    ("mode", "gate", "consensus", "iterations", "validators"),
    [("mvp", 0.65, 0.85, 5, 2), ("standard", 0.75, 0.90, 10, 4), ("enterprise", 0.85, 0.95, 15, 5)],
)
def test_each_mode_sets_gate_consensus_iterations_and_team(
    mode: str, gate: float, consensus: float, iterations: int, validators: int
) -> None:
    preset = MODES[mode]
    limits = _limits(LoopStartArgs(task="t", mode=mode), LoopConfig(), preset)  # type: ignore[arg-type]
    assert (limits.gate_threshold, limits.consensus_threshold, limits.max_loop3) == (
        gate,
        consensus,
        iterations,
    )
    assert limits.gate_mean <= gate  # a lenient gate is not undone by the mean
    assert len(_sized(SIZING["medium"][1], preset.validators)) == validators


def test_explicit_options_win_over_the_mode() -> None:
    args = LoopStartArgs(
        task="t", mode="mvp", gate_threshold=0.7, consensus_threshold=0.99, max_loop3=2
    )
    limits = _limits(args, LoopConfig(), MODES["mvp"])
    assert (limits.gate_threshold, limits.consensus_threshold, limits.max_loop3) == (0.7, 0.99, 2)


def test_no_mode_keeps_the_configured_loop() -> None:
    cfg = LoopConfig(gate_threshold=0.8, consensus_threshold=0.92, max_loop3=7)
    limits = _limits(LoopStartArgs(task="t"), cfg, None)
    assert (limits.gate_threshold, limits.consensus_threshold, limits.max_loop3) == (0.8, 0.92, 7)
    assert _sized(("a", "b", "c"), 0) == ["a", "b", "c"]
    assert _sized(("a", "b"), 5) == ["a", "b", "a", "b", "a"]


def test_an_out_of_range_threshold_is_a_clear_error() -> None:
    with pytest.raises(InvalidArgs, match="gate_threshold"):
        _limits(LoopStartArgs(task="t", gate_threshold=1.5), LoopConfig(), None)
