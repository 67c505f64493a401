"""Repo-wide checks run over every implemented pattern, so a new pattern is covered on arrival."""

from shared.catalogue import Entry, entries


def implemented() -> list[Entry]:
    return [entry for entry in entries() if entry.implemented]
