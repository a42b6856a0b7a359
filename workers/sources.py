"""Backfill sources that are files: one JSONL/CSV file, or a glob of them (one file per day).

A file's modification time is its updated-at: a run takes the files changed since
the watermark, reads each with :func:`workers.intake.read_items`, and moves the
watermark to the newest of them. (A table or query in a database is the other kind of
source; it is read by ``models.sources`` because only ``models`` talks SQL.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

_DB_SCHEME = re.compile(r"^(postgres(ql)?|sqlite)(\+\w+)?://")
_GLOB = re.compile(r"[*?\[]")


def is_database_url(spec: str) -> bool:
    return bool(_DB_SCHEME.match(spec))


@dataclass(frozen=True, slots=True)
class SourceFile:
    path: Path
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class FileSource:
    spec: str  # a path or a glob such as /data/posts/*.jsonl

    @property
    def key(self) -> str:
        return str(Path(self.spec).expanduser().absolute())

    def files(self) -> list[SourceFile]:
        """Every matching file, oldest first (then by name)."""
        spec = Path(self.spec).expanduser()
        if _GLOB.search(str(spec)):
            anchor = Path(spec.anchor) if spec.is_absolute() else Path()
            paths = list(anchor.glob(str(spec.relative_to(anchor))))
        else:
            paths = [spec]
        found = [
            SourceFile(p, datetime.fromtimestamp(p.stat().st_mtime, UTC))
            for p in paths
            if p.is_file()
        ]
        return sorted(found, key=lambda f: (f.updated_at, str(f.path)))

    def changed_since(self, since: datetime | None) -> list[SourceFile]:
        return [f for f in self.files() if since is None or f.updated_at > since]
