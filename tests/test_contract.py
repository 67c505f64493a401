"""Every HTTP service of every pattern keeps its contract: what /docs shows, and no 5xx to
generated or malformed input.

Each implemented pattern with an HTTP service is started once from its compose file through
local mode (one start serves this module's tests, in the order below, on one worker); every
service that serves /openapi.json is then checked, in turn:
- /docs: each POST route's request example, sent as is, gets the answer its response example
  shows (before anything else has changed the pattern's state);
- fuzzed by schemathesis from that schema (examples, boundary coverage and random cases). Checks:
  no server error, answers match their documented schema, content type and status codes. Not its
  stateful phase (random sequences of calls): nearly half the fuzz's time, for APIs whose state
  (jobs, weights, records) each pattern's own end-to-end tests drive on purpose;
- every POST route is sent bodies that are not JSON, or not declared as JSON: one rule everywhere
  (415, or 422 naming what is wrong and where).
"""

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from shared.predict_route import EXAMPLE_REQUEST_ID
from shared.readme import difference
from shared.testing import pattern_running
from tests.conftest import http_patterns, openapi_services

CHECKS = ",".join(
    [
        "not_a_server_error",
        "response_schema_conformance",
        "content_type_conformance",
        "status_code_conformance",
    ]
)

pytestmark = pytest.mark.e2e


# (body, headers, status, words the answer must hold)
MALFORMED = [
    (b'{"data": [[1,', {"content-type": "application/json"}, 422, "Invalid JSON: "),
    (b'{"data": []}', {"content-type": "text/plain"}, 415, "must be application/json"),
    (b'{"data": []}', {}, 415, "must be application/json"),
    (b'{"data": "\xff"}', {"content-type": "application/json"}, 400, "not UTF-8"),
]


def _malformed_body_answers(url: str) -> list[str]:
    """What is wrong with each POST route's answers to malformed bodies (nothing, ideally)."""
    base = url.removesuffix("/openapi.json")
    paths = httpx2.get(url, timeout=5).json()["paths"]
    wrong = []
    for path in (p for p, operations in paths.items() if "post" in operations and "{" not in p):
        for body, headers, status, words in MALFORMED:
            answer = httpx2.post(f"{base}{path}", content=body, headers=headers, timeout=10)
            if answer.status_code != status or words not in answer.text:
                wrong.append(f"POST {path} {body!r} {headers}: {answer.status_code} {answer.text}")
    return wrong


@pytest.fixture(
    scope="module",
    params=[
        pytest.param(entry, id=entry.slug, marks=pytest.mark.xdist_group(f"contract-{entry.slug}"))
        for entry in http_patterns()
    ],
)
def services(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """name -> base URL of each service of the running pattern that serves /openapi.json."""
    with pattern_running(request.param.path) as pattern:
        found = openapi_services(pattern)
        assert found, f"{request.param.slug} has no HTTP service with an OpenAPI schema"
        yield found


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


def test_docs_examples_are_what_the_service_answers(services: dict[str, str]) -> None:
    wrong = []
    for (name, base), (path, request, status, example) in (
        (service, route) for service in services.items() for route in _examples(service[1])
    ):
        # The examples' own request id: an answer that depends on it (an A/B split keyed by
        # the request id) is then the one the example shows.
        headers = {"X-Request-ID": EXAMPLE_REQUEST_ID}
        answer = httpx2.post(f"{base}{path}", json=request, headers=headers, timeout=10)
        got = json.dumps(answer.json(), sort_keys=True)
        shown = json.dumps(example, sort_keys=True)
        diff = difference(shown, got, "/docs") if answer.status_code == status else got
        if example is None or diff is not None:
            wrong.append(f"{name} {path}: {answer.status_code}\n{diff}\nanswered: {got}")
    assert not wrong, "\n\n".join(wrong)


def test_http_services_never_answer_5xx_to_generated_input_and_refuse_malformed_bodies(
    services: dict[str, str], tmp_path: Path
) -> None:
    schemathesis = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert schemathesis
    schemas = {name: f"{base}/openapi.json" for name, base in services.items()}
    results = {
        name: subprocess.run(
            [
                schemathesis,
                "run",
                url,
                "--checks",
                CHECKS,
                "--phases",
                "examples,coverage,fuzzing",
                "--max-examples",
                "40",
                "--seed",
                "1",
                "--request-timeout",
                "10",
                "--report-dir",
                str(tmp_path),
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        for name, url in schemas.items()
    }
    malformed = {name: _malformed_body_answers(url) for name, url in schemas.items()}

    for name, result in results.items():
        assert result.returncode == 0, f"{name}:\n{result.stdout[-4000:]}"
    assert malformed == {name: [] for name in schemas}
