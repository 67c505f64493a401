r"""All-in-one, the antipattern: both models in one server, one process, one deploy.

The same two model servers as the split design's (shared.predict_route.serve_model, one per
model), mounted in one app: model A under /a, model B under /b. Nothing in the code couples
them; the process does. A crash of the process serving A (a segfault in a native library, the
OOM killer, a bad input that takes the runtime down) is a crash of B's server too, and a new
version of A is a restart of the process, during which B answers nobody.

    .venv/bin/uvicorn serving_patterns.antipatterns.all_in_one.monolith:create_app --factory \
        --port 8140
"""

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from starlette.applications import Starlette
from starlette.routing import Mount

from serving_patterns.antipatterns.all_in_one.settings import MonolithSettings
from shared.predict_route import serve_model


def create_app(settings: MonolithSettings | None = None) -> Starlette:
    """Model A's server at /a and model B's at /b, each with its whole contract (/a/predict,
    /b/ready, /b/metrics...): one process around two apps, and nothing else."""
    settings = settings or MonolithSettings()
    models = {
        "a": serve_model("all-in-one-monolith-a", settings, 0, __doc__ or ""),
        "b": serve_model(
            "all-in-one-monolith-b",
            settings.model_copy(update={"model_dir": settings.model_b_dir}),
            0,
            __doc__ or "",
        ),
    }

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # A mounted app's lifespan does not run by itself: both models load in this one.
        async with AsyncExitStack() as stack:
            for model in models.values():
                await stack.enter_async_context(model.router.lifespan_context(model))
            yield

    return Starlette(
        routes=[Mount(f"/{name}", model) for name, model in models.items()], lifespan=lifespan
    )
