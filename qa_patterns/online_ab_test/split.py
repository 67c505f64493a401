"""Online A/B test pattern, the split: which variant serves a request, the same rule as nginx's.

A request's key is its user id (the `X-User-ID` header: sticky, the same user always gets the
same variant) or, without one, its request id (a random split, as good as any coin for unique
ids). The key is hashed with MurmurHash2, 32-bit, exactly as nginx's `split_clients` hashes it
(ngx_murmur_hash2 in src/core/ngx_string.c), and the hash is compared with B's share scaled to
2^32 as split_clients scales its percentages (src/http/modules/ngx_http_split_clients_module.c):
shares in hundredths of a percent, `cut = share * 0xffffffff // 10000`, B when `hash < cut`.
So proxy.py and nginx (nginx/split/split.conf, written by `nginx_split_block`) put every key in
the same variant, and raising B's share only moves users from A to B, never back.

B's share 0 is the rollback: every request goes to A (nginx refuses a `0%` line, so the block
then names A alone).

    .venv/bin/python -m qa_patterns.online_ab_test.split 12.5 > nginx/split/split.conf
"""

import argparse
import os
import signal
import sys
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

Variant = Literal["a", "b"]
VARIANTS: tuple[Variant, Variant] = ("a", "b")
USER_HEADER = "X-User-ID"
VARIANT_HEADER = "X-Variant"

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur_hash2(data: bytes) -> int:
    """ngx_murmur_hash2: MurmurHash2 with seed 0, little-endian words, 32-bit."""
    length = len(data)
    h = length & _MASK
    whole = length - length % 4
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = (h * _M) & _MASK
        h ^= k
    tail = data[whole:]
    if tail:
        for shift, byte in reversed(list(enumerate(tail))):
            h ^= byte << (8 * shift)
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


def hundredths(b_percent: float | Decimal) -> int:
    """B's share in hundredths of a percent, as split_clients reads `12.34%` (two decimals)."""
    value = Decimal(str(b_percent))
    if not 0 <= value <= 100:
        raise ValueError(f"B's share must be within 0 and 100 %, not {b_percent}")
    if value != value.quantize(Decimal("0.01")):
        raise ValueError(
            f"B's share has at most two decimals (nginx's resolution), not {b_percent}"
        )
    return int(value * 100)


def cut(b_percent: float | Decimal) -> int:
    """The hash below which a key goes to B: split_clients' cumulative bound for B's line."""
    return (hundredths(b_percent) * _MASK // 10000) & _MASK


def assign(key: str, b_percent: float | Decimal) -> Variant:
    """The variant of `key` with B at `b_percent` % of keys: nginx's choice for the same key."""
    return "b" if murmur_hash2(key.encode()) < cut(b_percent) else "a"


def nginx_split_block(b_percent: float | Decimal, key: str = "$ab_key") -> str:
    """The split_clients block that assigns as `assign` does (B's line first, then A)."""
    share = hundredths(b_percent)
    lines = [f"    {share // 100}.{share % 100:02d}% b;"] if share else []
    lines.append("    * a;")
    return (
        "# Written by qa_patterns/online_ab_test/split.py: B's share of the keys, the rest to A.\n"
        "# A new share takes effect with a graceful reload (nginx -s reload), no restart.\n"
        f'split_clients "{key}" $ab_variant {{\n' + "\n".join(lines) + "\n}\n"
    )


def _writable(value: float) -> float:
    hundredths(value)  # nginx's resolution: a share it could not write is refused here too
    return value


# B's share as the settings and PUT /weights take it: 0 to 100 %, at most two decimals.
Share = Annotated[float, Field(ge=0, le=100), AfterValidator(_writable)]


class Weights(BaseModel):
    """B's share of the traffic (A has the rest): what PUT /weights takes and GET /weights gives."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"b_percent": 50}]})

    b_percent: Share = Field(description="B's share in %, at most two decimals; 0: all to A")


class Split(Weights):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"a_percent": 50.0, "b_percent": 50.0}]}
    )

    a_percent: float = Field(description="A's share in %: what B does not take")

    @classmethod
    def of(cls, b_percent: float) -> "Split":
        return cls(a_percent=float(Decimal(100) - Decimal(str(b_percent))), b_percent=b_percent)


# The knobs of a running test, for an operator's script or another pattern's (a kill switch):
# proxy.py takes the new share at once; nginx takes a rewritten split file on a graceful reload.


def set_b_percent(proxy_url: str, b_percent: float, timeout: float = 5.0) -> Split:
    """Give B `b_percent` % of proxy.py's traffic from the next request on."""
    import httpx2  # here: the model servers read this module's Share and carry no HTTP client

    response = httpx2.put(f"{proxy_url}/weights", json={"b_percent": b_percent}, timeout=timeout)
    response.raise_for_status()
    return Split.model_validate_json(response.content)


def rollback(proxy_url: str) -> Split:
    """The kill switch: everything to A, at once."""
    return set_b_percent(proxy_url, 0)


def set_nginx_b_percent(split_file: Path, pid_file: Path, b_percent: float) -> None:
    """Write nginx's split block for `b_percent` and reload nginx gracefully (SIGHUP, what
    `nginx -s reload` sends): new workers take the new split, the old ones finish their
    requests; no connection is refused. The block is written to a new file then moved over the
    old, so a reload never reads half of it."""
    block = nginx_split_block(b_percent)
    partial = split_file.with_suffix(".partial")
    partial.write_text(block)
    os.replace(partial, split_file)
    os.kill(int(pid_file.read_text().split()[0]), signal.SIGHUP)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="nginx's split_clients block for B's share")
    parser.add_argument("b_percent", type=Decimal, help="B's share of the keys, 0 to 100 (%%)")
    args = parser.parse_args(argv)
    try:
        sys.stdout.write(nginx_split_block(args.b_percent))
    except ValueError as exc:
        parser.error(str(exc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
