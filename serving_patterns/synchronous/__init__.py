"""Synchronous pattern: a web app waits on a prediction server and branches on its answer."""
