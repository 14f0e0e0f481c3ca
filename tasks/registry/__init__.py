"""The model registry: versions, aliases and records; candidates registered; versions loaded."""
