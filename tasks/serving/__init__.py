"""Serving: SeldonDeployment manifests, their validation, and the targets that roll them out."""
