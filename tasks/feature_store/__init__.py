"""Feast: definitions from a spec, the offline and online stores, retrieval, the skew check."""
