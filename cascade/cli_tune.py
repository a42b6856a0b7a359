"""`cascade tune` and `cascade train-local`: thresholds and the learned tier."""

from __future__ import annotations
