"""Serving template pattern: model services generated from one versioned template (copier)."""
