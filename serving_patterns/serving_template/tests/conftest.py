"""Fixtures of the serving template's tests: the versioned template repository (v1 and v2)."""

from pathlib import Path

import pytest

from serving_patterns.serving_template.tests.fleet import template_repository


@pytest.fixture(scope="session")
def template_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return template_repository(tmp_path_factory.mktemp("template") / "serving-template")
