"""Operations commands: doctor, purge, resume."""

from __future__ import annotations
