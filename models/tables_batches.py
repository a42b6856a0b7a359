"""Tables added for a later part of the product (placeholder until its migration lands)."""

from __future__ import annotations
