"""``cascade`` with the COPY path for item inserts: a stand-in until the lead wires it.

``python -m bench.copy_cli submit FILE --pipeline P`` is ``cascade submit`` with
``models.repo.add_items`` replaced by :func:`models.bulk.add_items_fast` (COPY on
Postgres), which is the one-line change proposed for ``tasks/submit.py``.
"""

from __future__ import annotations

from models import bulk, repo

repo.add_items = bulk.add_items_fast  # type: ignore[assignment]

if __name__ == "__main__":
    from cascade.cli import main

    main()
