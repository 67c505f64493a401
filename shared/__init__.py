"""The small common library every pattern imports.

Serving-time modules (logs, settings, schemas, model, service, http) import no training library;
`shared.training` is for build stages and training jobs only, and `shared.localmode` and
`shared.cli` are developer tooling.
"""

# The project's version (pyproject.toml reads it here): what GET /v2 names as the server's.
__version__ = "0.1.0"
