r"""Online bigsize, the model servers: one code, the same API, a big model or a small one.

Both are the shared contract's model server (shared.predict_route.serve_model) over 8x8 digit
images (64 pixel intensities 0..16 a row). Only the model directory differs: the big one holds
a nearest-neighbour model over 33,675 reference images (8.7 MB), the small one a linear model
(4 KB). Nothing is injected: the big one is slow because every row is compared with every
reference image, on the event loop, so while it computes the server answers nobody else.

    .venv/bin/uvicorn serving_patterns.antipatterns.online_bigsize.models:create_big --factory \
        --port 8131
"""

from fastapi import FastAPI

from serving_patterns.antipatterns.online_bigsize.settings import BigSettings, SmallSettings
from shared.predict_route import serve_model


# One factory per compose service: each reads its own environment prefix.
def create_small(settings: SmallSettings | None = None) -> FastAPI:
    return serve_model("online-bigsize-small", settings or SmallSettings(), 0, __doc__ or "")


def create_big(settings: BigSettings | None = None) -> FastAPI:
    return serve_model("online-bigsize-big", settings or BigSettings(), 0, __doc__ or "")
