"""Microservice vertical pattern: a proxy drives a chain of model services, each choosing or
feeding the next."""
