"""Serving antipatterns: designs that look fine until load, a crash or a redeploy, each beside
its fix."""
