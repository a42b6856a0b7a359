"""`cascade backfill`: nightly moderation backfills (Message Batches)."""

from __future__ import annotations
