"""Online bigsize antipattern: a big slow model in the real-time path misses the latency SLO
that a small fast one, behind the same API, meets."""
