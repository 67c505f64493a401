"""The HTTP client a service uses to call another: pooled, with timeouts, passing the request id."""

import httpx2

from shared.logs import request_id_var


async def _pass_request_id(request: httpx2.Request) -> None:
    request.headers["X-Request-ID"] = request_id_var.get()


def service_client(
    base_url: str, timeout_seconds: float, max_connections: int = 100
) -> httpx2.AsyncClient:
    """One client per upstream, created in the lifespan and closed there: connections are reused.

    The timeout bounds each phase (connect, write, each read, pool wait); for one deadline on
    the whole call, wrap it in asyncio.timeout.
    """
    return httpx2.AsyncClient(
        base_url=base_url,
        timeout=httpx2.Timeout(timeout_seconds),
        limits=httpx2.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        ),
        event_hooks={"request": [_pass_request_id]},
    )
