"""Training code in serving (antipattern): the inference code shared, the rest kept apart."""
