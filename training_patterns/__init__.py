"""Training patterns: how models are trained, recorded, searched for and registered."""
