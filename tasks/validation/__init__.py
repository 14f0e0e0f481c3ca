"""Validating a candidate: the held-out set, metrics, behaviour, gates, explanations, evidence."""
