"""Every implemented pattern's README and /docs show what the code does.

The README's Try it commands print what it shows (shared.readme), and each POST route's /docs
example, sent as is, gets the answer its response example shows. Both run against the pattern in
local mode; a new pattern is covered on arrival.
"""

import json
from pathlib import Path
from typing import Any, TypedDict

import httpx2
import pytest

from shared.catalogue import Entry
from shared.readme import difference, run_try_it
from shared.testing import pattern_running
from tests.conftest import implemented

pytestmark = pytest.mark.e2e


class PrivateFiles(TypedDict, total=False):
    """run_try_it's arguments that point a pattern's files elsewhere."""

    variables: dict[str, str]
    replace: dict[str, str]


def _private_files(entry: Entry, tmp_path: Path) -> PrivateFiles:
    """What a pattern's README run needs so as not to touch the checkout's own files."""
    if entry.path.name == "asynchronous":  # the sink's SQLite file
        database = f"{tmp_path}/inferences.db"
        return {
            "variables": {"ASYNCHRONOUS_SINK_DATABASE_URL": f"sqlite:///{database}"},
            "replace": {".local/asynchronous/inferences.db": database},
        }
    return {}


@pytest.mark.parametrize("entry", implemented(), ids=lambda e: e.slug)
def test_readme_try_it_prints_what_it_shows(entry: Entry, tmp_path: Path) -> None:
    assert run_try_it(entry.path, **_private_files(entry, tmp_path)) > 0


def _example(schema: dict[str, Any], openapi: dict[str, Any]) -> Any:
    """The first example of a (referenced) schema, or None."""
    if "$ref" in schema:
        schema = openapi["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return (schema.get("examples") or [None])[0]


def _examples(base: str) -> list[tuple[str, Any, int, Any]]:
    """(path, request example, status, response example) of each POST route with an example."""
    openapi = httpx2.get(f"{base}/openapi.json", timeout=5).json()
    found = []
    for path, operations in openapi["paths"].items():
        post = operations.get("post")
        body = (post or {}).get("requestBody", {}).get("content", {}).get("application/json")
        request = body and _example(body["schema"], openapi)
        if request is None:
            continue
        status, answer = next(
            (int(code), r["content"]["application/json"]["schema"])
            for code, r in post["responses"].items()
            if code.startswith("2") and "application/json" in r.get("content", {})
        )
        found.append((path, request, status, _example(answer, openapi)))
    return found


@pytest.mark.parametrize("entry", implemented(), ids=lambda e: e.slug)
def test_docs_examples_are_what_the_service_answers(entry: Entry) -> None:
    wrong = []
    with pattern_running(entry.path) as pattern:
        bases = [
            (name, f"http://127.0.0.1:{port}")
            for name, ports in pattern.addresses.ports.items()
            for port in ports.values()
        ]
        for (name, base), (path, request, status, example) in (
            (service, route) for service in bases for route in _examples(service[1])
        ):
            answer = httpx2.post(f"{base}{path}", json=request, timeout=10)
            got = json.dumps(answer.json(), sort_keys=True)
            shown = json.dumps(example, sort_keys=True)
            diff = difference(shown, got, "/docs") if answer.status_code == status else got
            if example is None or diff is not None:
                wrong.append(f"{name} {path}: {answer.status_code}\n{diff}\nanswered: {got}")
    assert not wrong, "\n\n".join(wrong)
