"""Training antipatterns: training that cannot be repeated, shipped or followed, each beside
its fix."""
