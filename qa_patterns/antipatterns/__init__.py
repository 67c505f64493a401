"""QA antipatterns: judging a model by what it cannot show, each beside its fix."""
