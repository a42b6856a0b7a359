"""Reasons that stop a whole job, shared by the layer that decides and the one that stores.

A decision's reason travels as text (the item's ``error``); a job is failed rather than
paused when its reason starts with one of these, so ``models`` needs no ``workers``.
"""

from __future__ import annotations

# The model API refused the credentials (401/403) or there were none to send.
AUTH_FAILED = "the model API refused the credentials"
