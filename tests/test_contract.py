"""Every HTTP service of every pattern keeps the contract under generated input: no 5xx.

Each implemented pattern is started from its compose file through local mode; every service
that serves /openapi.json is fuzzed by schemathesis from that schema (examples, boundary
coverage and random cases). Checks: no server error, answers match their documented schema,
content type and status codes. Then every POST route is sent bodies that are not JSON, or not
declared as JSON: one rule everywhere (415, or 422 naming what is wrong and where).
"""

import shutil
import subprocess
import sys
from pathlib import Path

import httpx2
import pytest

from shared.catalogue import Entry
from shared.testing import pattern_running
from tests.conftest import implemented

CHECKS = ",".join(
    [
        "not_a_server_error",
        "response_schema_conformance",
        "content_type_conformance",
        "status_code_conformance",
    ]
)

pytestmark = pytest.mark.e2e


def _schema_url(base: str) -> str | None:
    """The service's schema URL; None for a service without one (404, or not HTTP at all)."""
    try:
        answer = httpx2.get(f"{base}/openapi.json", timeout=5)
    except httpx2.HTTPError:
        return None
    if answer.status_code == 404:
        return None
    assert answer.status_code == 200, f"{base}/openapi.json answered {answer.status_code}"
    return f"{base}/openapi.json"


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


@pytest.mark.parametrize("entry", implemented(), ids=lambda e: e.slug)
def test_http_services_never_answer_5xx_to_generated_input_and_refuse_malformed_bodies(
    entry: Entry, tmp_path: Path
) -> None:
    schemathesis = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert schemathesis
    with pattern_running(entry.path) as pattern:
        schemas = {
            name: url
            for name, ports in pattern.addresses.ports.items()
            for port in ports
            if (url := _schema_url(pattern.url(name, port)))
        }
        results = {
            name: subprocess.run(
                [
                    schemathesis,
                    "run",
                    url,
                    "--checks",
                    CHECKS,
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

    assert schemas, f"{entry.slug} has no HTTP service with an OpenAPI schema"
    for name, result in results.items():
        assert result.returncode == 0, f"{name}:\n{result.stdout[-4000:]}"
    assert malformed == {name: [] for name in schemas}
