"""Online A/B test pattern, the simulated users: a load script that predicts and converts.

A user (an id from a pool, sent as X-User-ID) is shown the species a model predicts for a
flower; the user "converts" (buys the right seeds, say) with a probability that depends on
whether the prediction was right: CONVERT_IF_RIGHT when it matches the flower's true species,
CONVERT_IF_WRONG when not. The true species is the classic three-rule tree on the petals, which
both models approximate: so the KPI (conversions per prediction) measures each model's online
quality, which the report compares. The conversion goes to POST /events with the prediction's
request id and the user id, as a real client would report it. locustfile.py runs the same users.

    .venv/bin/python -m qa_patterns.online_ab_test.simulate --url http://localhost:8220 \
        --requests 500
"""

import argparse
import asyncio
import random
import sys
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx2

from qa_patterns.online_ab_test.split import USER_HEADER

CONVERT_IF_RIGHT = 0.30
CONVERT_IF_WRONG = 0.05


def true_species(row: list[float]) -> str:
    """The flower's species by the petals (the tree that separates iris almost perfectly)."""
    _, _, petal_length, petal_width = row
    if petal_length < 2.45:
        return "setosa"
    return "versicolor" if petal_width < 1.75 else "virginica"


def flower(rng: random.Random) -> list[float]:
    """A flower near one of the three species (means and spreads of the iris data)."""
    means, spreads = {
        "setosa": ([5.0, 3.4, 1.5, 0.2], [0.35, 0.38, 0.17, 0.1]),
        "versicolor": ([5.9, 2.8, 4.3, 1.3], [0.52, 0.31, 0.47, 0.2]),
        "virginica": ([6.6, 3.0, 5.6, 2.0], [0.64, 0.32, 0.55, 0.27]),
    }[rng.choice(["setosa", "versicolor", "virginica"])]
    return [round(max(0.1, rng.gauss(m, s)), 1) for m, s in zip(means, spreads, strict=True)]


def converts(row: list[float], label: str, draw: float) -> bool:
    """Whether the user shown `label` for `row` converts, `draw` a uniform number in [0, 1)."""
    right = label == true_species(row)
    return draw < (CONVERT_IF_RIGHT if right else CONVERT_IF_WRONG)


# How users behave: whether a user shown `prediction` (an answer's prediction: its label and
# probabilities) for `row` converts, `draw` a uniform number in [0, 1). Another pattern's
# simulated users pass their own to run() and main().
Population = Callable[[list[float], dict[str, Any], float], bool]


def by_label(row: list[float], prediction: dict[str, Any], draw: float) -> bool:
    """This pattern's users: only whether the label is right counts (converts)."""
    return converts(row, prediction["label"], draw)


@dataclass
class Visit:
    user_id: str
    request_id: str
    variant: str
    converted: bool


async def visit(
    client: httpx2.AsyncClient,
    user_id: str,
    row: list[float],
    draw: float,
    population: Population = by_label,
) -> Visit:
    """One user's prediction for `row` and, maybe, conversion."""
    request_id = uuid.uuid4().hex
    headers = {USER_HEADER: user_id, "X-Request-ID": request_id}
    response = await client.post("/predict", json={"data": [row]}, headers=headers)
    response.raise_for_status()
    answer = response.json()
    converted = population(row, answer["predictions"][0], draw)
    if converted:
        event = {"request_id": request_id, "user_id": user_id, "event": "conversion"}
        (await client.post("/events", json=event)).raise_for_status()
    return Visit(user_id, request_id, answer["variant"], converted)


async def run(
    url: str,
    requests: int,
    users: int,
    concurrency: int,
    seed: int,
    population: Population = by_label,
) -> list[Visit]:
    """`requests` visits of `users` users, `concurrency` at once. Who visits, with which flower,
    and whether they would convert are drawn first, from `seed`: the same seed gives the same
    visits, whatever the order the answers come back in."""
    rng = random.Random(seed)
    ids = [f"user-{seed}-{i}" for i in range(users)]
    plan = [(rng.choice(ids), flower(rng), rng.random()) for _ in range(requests)]
    gate = asyncio.Semaphore(concurrency)
    async with httpx2.AsyncClient(base_url=url, timeout=30) as client:

        async def one(user_id: str, row: list[float], draw: float) -> Visit:
            async with gate:
                return await visit(client, user_id, row, draw, population)

        return await asyncio.gather(*(one(*step) for step in plan))


def main(argv: list[str] | None = None, population: Population = by_label) -> int:
    parser = argparse.ArgumentParser(description="Simulated users: predictions and conversions")
    parser.add_argument("--url", default="http://localhost:8220", help="the proxy (or nginx)")
    parser.add_argument("--requests", type=int, default=500, help="predictions to ask for")
    parser.add_argument("--users", type=int, default=200, help="distinct user ids")
    parser.add_argument("--concurrency", type=int, default=8, help="requests at once")
    parser.add_argument("--seed", type=int, default=1, help="the users' and flowers' seed")
    args = parser.parse_args(argv)
    visits = asyncio.run(
        run(args.url, args.requests, args.users, args.concurrency, args.seed, population)
    )
    served = Counter(v.variant for v in visits)
    converted = Counter(v.variant for v in visits if v.converted)
    for variant in sorted(served):
        sys.stdout.write(
            f"variant {variant}: {served[variant]} predictions, {converted[variant]} conversions\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
