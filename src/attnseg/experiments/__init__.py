"""Experiments: workflows that run the library end to end (``quickstart``, ``compare``).

Orchestration only: each step calls the library (datasets, training, inference, metrics, viz) and
passes a small dataclass to the next; the maths lives in the library.
"""
