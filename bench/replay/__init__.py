"""Replay FrugalGPT's recorded OVERRULING answers through the real Cascade engine.

Run ``python -m bench.replay``; README.md in this directory says what is measured and how.
"""
