"""QA patterns: how a new model is judged against the one in production, before and while
it serves."""
