"""Prediction circuit break pattern, a client with a fallback path: the other half of the pattern.

A shed request is not an error here. The proxy's 503 says why (`fallback`) and when to ask again
(Retry-After); the client goes on with a default answer (FALLBACK_LABEL, "no prediction") and
its workflow does not stop. Anything else that is not an answer (a 4xx, a 502, a 504) is still
raised: those are not the load's doing.

    .venv/bin/python -m serving_patterns.prediction_circuit_break.client http://localhost:8090 200

sends 200 requests at once, as 200 clients would, and counts what each got.
"""

import argparse
import asyncio
from collections import Counter
from dataclasses import dataclass

import httpx2

FALLBACK_LABEL = "unknown"
SETOSA = [5.1, 3.5, 1.4, 0.2]


@dataclass(frozen=True)
class Answer:
    labels: list[str]
    fallback: str | None = None  # why the default answer was used; None: the model's own
    retry_after_seconds: int | None = None


async def classify(client: httpx2.AsyncClient, rows: list[list[float]]) -> Answer:
    """The model's labels for the rows, or FALLBACK_LABEL for each when the proxy could not
    predict them now (shed, circuit open, predictor unavailable)."""
    response = await client.post("/predict", json={"data": rows})
    if response.status_code == 503:
        body = response.json()
        if body.get("fallback"):
            return Answer(
                [FALLBACK_LABEL] * len(rows),
                body["fallback"],
                int(response.headers.get("retry-after", "1")),
            )
    response.raise_for_status()
    return Answer([p["label"] for p in response.json()["predictions"]])


async def burst(url: str, clients: int) -> Counter[str]:
    """`clients` requests at once, each on its own connection: how many got which answer."""
    limits = httpx2.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx2.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        answers = await asyncio.gather(*(classify(client, [SETOSA]) for _ in range(clients)))
    return Counter(answer.fallback or "predicted" for answer in answers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else "")
    parser.add_argument("url", help="the proxy's base URL")
    parser.add_argument("clients", type=int, nargs="?", default=200, help="requests at once")
    args = parser.parse_args()
    counts = asyncio.run(burst(args.url, args.clients))
    shown = ", ".join(f"{reason}: {n}" for reason, n in sorted(counts.items()))
    print(f"{args.clients} clients at once: {shown}")  # noqa: T201  (the command's output)


if __name__ == "__main__":
    main()
