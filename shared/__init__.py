"""The small common library every pattern imports.

Serving-time modules (logs, settings, schemas, model, service, http) import no training library;
`shared.training` is for build stages and training jobs only, and `shared.localmode` and
`shared.cli` are developer tooling.
"""
