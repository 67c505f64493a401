"""The split on its own: nginx's hash and percentages, computed in Python. That nginx itself
agrees, key by key, is test_e2e.py's test_both_proxies_put_every_user_in_the_same_variant."""

import uuid
from decimal import Decimal
from pathlib import Path

import pytest
from scipy.stats import binom

from qa_patterns.online_ab_test.split import (
    assign,
    cut,
    hundredths,
    murmur_hash2,
    nginx_split_block,
)

FOLDER = Path(__file__).resolve().parents[1]


def binomial_bounds(n: int, p: float, alpha: float = 1e-6) -> tuple[int, int]:
    """The counts a fair split of n at share p stays within but for a chance of alpha."""
    return int(binom.ppf(alpha / 2, n, p)), int(binom.isf(alpha / 2, n, p))


def test_murmur_hash2_gives_nginxs_values() -> None:
    # Taken from nginx 1.22's split_clients (the keys sent as X-User-ID, $ab_variant back) and
    # the MurmurHash2 reference (seed 0); the tail bytes take each of the switch's three cases.
    assert murmur_hash2(b"") == 0
    assert murmur_hash2(b"a") == 0x92685F5E
    assert murmur_hash2(b"ab") == 0x1AA14063
    assert murmur_hash2(b"abc") == 0x13577C9B
    assert murmur_hash2(b"abcd") == 0x26873021
    assert murmur_hash2(b"abcde") == 0x5F09A8DE


def test_shares_are_scaled_to_2_to_the_32_as_split_clients_scales_them() -> None:
    assert cut(0) == 0
    assert cut(10) == 1000 * 0xFFFFFFFF // 10000
    assert cut(Decimal("33.33")) == 3333 * 0xFFFFFFFF // 10000
    assert cut(100) == 0xFFFFFFFF


@pytest.mark.parametrize("share", [-1, 100.01, "12.345", 0.1 + 0.2])
def test_a_share_nginx_could_not_write_is_refused(share: float | str) -> None:
    with pytest.raises(ValueError, match="B's share"):
        hundredths(share)  # type: ignore[arg-type]


@pytest.mark.parametrize("b_percent", [10, 50, 1.5])
def test_over_many_keys_the_split_matches_the_share_within_the_binomial_bound(
    b_percent: float,
) -> None:
    n = 20_000
    b = sum(assign(uuid.uuid4().hex, b_percent) == "b" for _ in range(n))

    low, high = binomial_bounds(n, b_percent / 100)
    assert low <= b <= high


def test_share_zero_sends_every_key_to_a_and_100_every_key_to_b() -> None:
    keys = [f"user-{i}" for i in range(5000)]

    assert {assign(k, 0) for k in keys} == {"a"}
    assert {assign(k, 100) for k in keys} == {"b"}


def test_raising_bs_share_moves_users_from_a_to_b_and_never_back() -> None:
    keys = [f"user-{i}" for i in range(5000)]
    shares = [0, 10, 50, 90, 100]
    in_b = [{k for k in keys if assign(k, share) == "b"} for share in shares]

    for smaller, larger in zip(in_b, in_b[1:], strict=False):
        assert smaller <= larger
    assert len(in_b[1]) < len(in_b[2]) < len(in_b[3])


def test_the_same_key_always_gets_the_same_variant() -> None:
    assert [assign("user-42", 10) for _ in range(100)] == [assign("user-42", 10)] * 100


def test_the_nginx_block_names_b_first_and_drops_a_zero_share() -> None:
    assert "    12.50% b;\n    * a;\n}" in nginx_split_block(12.5)
    assert "    100.00% b;\n    * a;\n}" in nginx_split_block(100)
    zero = nginx_split_block(0)
    assert "% b;" not in zero  # nginx refuses "0%": A alone takes every key
    assert "    * a;\n}" in zero


def test_the_committed_nginx_split_is_the_proxys_default_share() -> None:
    from qa_patterns.online_ab_test.settings import ProxySettings

    committed = (FOLDER / "nginx" / "split" / "split.conf").read_text()
    assert committed == nginx_split_block(ProxySettings().b_percent)
