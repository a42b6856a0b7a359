"""`cascade chaos`: fleet-wide chaos drills on a model."""

from __future__ import annotations
