"""Dataset specs: the declarative description of a dataset, the registry of them, inference."""
