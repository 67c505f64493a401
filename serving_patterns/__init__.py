"""Serving patterns: how a trained model answers requests."""
