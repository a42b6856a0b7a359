"""The memory scenario's figure: the peak of the workers' prefork children only."""

from __future__ import annotations

from bench.memory import child_peaks
from bench.procs import Sampler, Seen


def test_child_peaks_leave_out_the_started_processes_and_other_roles() -> None:
    sampler = Sampler()
    sampler.roots = {100: "worker", 200: "worker", 300: "fake"}
    sampler.seen = {
        100: Seen("worker", 0.0, 0.0, hwm_mb=900.0),  # a Celery parent: left out
        101: Seen("worker", 0.0, 0.0, hwm_mb=120.5),
        102: Seen("worker", 0.0, 0.0, hwm_mb=130.0),
        201: Seen("worker", 0.0, 0.0, hwm_mb=110.0),
        300: Seen("fake", 0.0, 0.0, hwm_mb=999.0),
    }
    assert child_peaks(sampler) == [130.0, 120.5, 110.0]
