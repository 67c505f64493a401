"""Only-me (antipattern): a model trained with nothing recorded, beside a recorded run."""
