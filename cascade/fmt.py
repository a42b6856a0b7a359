"""How numbers look everywhere in the CLI and the HTML page, and tables that fit.

Money: ``$1,234.56`` from $100 up, ``$0.0112`` below (four places), ``-$0.0112`` for
a negative amount; counts with thousands separators (``20,000``). A :class:`FitTable`
too wide for the terminal drops its narrowest optional columns first (latencies,
counts) and never the first column or one holding money, so nothing a user types
or pays is cut; it says which columns it left out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from rich import box
from rich.console import Console, ConsoleOptions, RenderResult
from rich.table import Table
from rich.text import Text

_INT = re.compile(r"^-?\d{4,}$")


def picked(row: Any, *names: str) -> dict[str, Any]:
    """The named attributes of ``row`` as keys of the same names, in this order."""
    return {name: getattr(row, name) for name in names}


def money(value: Decimal | str | int | float) -> str:
    amount = Decimal(str(value))
    sign = "-" if amount < 0 else ""
    amount = abs(amount)
    if amount >= 100:
        return f"{sign}${amount:,.2f}"
    return f"{sign}${amount:,.4f}"


def count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def plural(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _grouped(cell: Any) -> Any:
    """A bare integer cell of 4+ digits gets its thousands separators."""
    if isinstance(cell, str) and _INT.match(cell):
        return f"{int(cell):,}"
    return cell


class FitTable(Table):
    """A table that drops optional columns, rightmost first, rather than cut cells."""

    def __init__(self, *args: Any, keep: Iterable[int] = (0,), **kwargs: Any) -> None:
        kwargs.setdefault("box", box.SIMPLE_HEAD)
        kwargs.setdefault("pad_edge", False)
        kwargs.setdefault("title_justify", "left")
        super().__init__(*args, **kwargs)
        self.keep = set(keep)

    def add_row(self, *cells: Any, **kwargs: Any) -> None:
        super().add_row(*(_grouped(c) for c in cells), **kwargs)

    def _holds_money(self, index: int) -> bool:
        return any("$" in str(c) for c in self.columns[index]._cells)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        dropped: list[str] = []
        while self.__rich_measure__(console, options).maximum > options.max_width:
            optional = [
                i
                for i in range(len(self.columns))
                if i not in self.keep and not self._holds_money(i)
            ]
            if not optional:
                break
            index = optional[-1]
            dropped.append(str(self.columns[index].header))
            del self.columns[index]
            self.keep = {k - 1 if k > index else k for k in self.keep}
        yield from super().__rich_console__(console, options)
        if dropped:
            yield Text(
                f"(not shown at this width: {', '.join(reversed(dropped))})",
                style="dim",
            )
