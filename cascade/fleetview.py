"""The fleet in a few lines: live workers per queue and the messages waiting there."""

from __future__ import annotations

from cascade.cliutil import out


def print_fleet(queues: list[str]) -> None:
    from cascade.doctor import plain_reason
    from tasks.fleet import live_workers, queue_depths, serving

    try:
        served = serving(live_workers(timeout_s=1.0), queues)
        depths = queue_depths(queues)
    except Exception as exc:
        out.print(f"  [yellow]broker not reachable[/yellow]: {plain_reason(exc)}")
        return
    for q in queues:
        note = "" if served[q] else f"  [yellow]start one: cascade worker --queues {q}[/yellow]"
        n = depths[q]
        out.print(
            f"  {q:<18}{served[q]:>3} workers {n:>7,} message{'' if n == 1 else 's'} waiting{note}",
            soft_wrap=True,
        )
