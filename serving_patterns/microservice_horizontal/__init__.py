"""Microservice horizontal pattern: one request fans out to independent models in parallel."""
