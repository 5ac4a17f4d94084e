"""A fuzz of the webhook trust boundary: any URL a caller may send is either refused with the
gateway's own error or accepted only when its literal address is public, and no URL stored on a
job, however it got there, breaks a monitor pass.

The oracle for "public" is written here apart from the code under test: the IPv4 address an
IPv6 literal carries is worked out bit by bit, and judged by ``ipaddress``'s own categories.
"""

from __future__ import annotations

import ipaddress
from collections import Counter

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from shared.domain.errors import Forbidden, InvalidRequest
from shared.domain.jobs import JobState
from shared.domain.keys import Principal, Scope
from shared.domain.synthesis import CustomVoiceRequest
from shared.domain.webhooks import Webhook, WebhookEvent, parse_webhook_url
from shared.usecases.gateway import Gateway
from shared.usecases.monitor import run_monitor
from shared.usecases.new_jobs import new_job
from tests.support.gateway import Fakes

ALICE = Principal(owner="alice", scopes=frozenset({Scope.USER}))
OUTCOMES: Counter[str] = Counter()

_V4_SPECIAL = [
    "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "0.0.0.0",
    "100.64.0.1", "224.0.0.1", "255.255.255.255", "192.0.2.1", "198.18.0.1",
]  # fmt: skip
_V4_PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.216.34"]


def v4_addresses() -> st.SearchStrategy[ipaddress.IPv4Address]:
    return st.one_of(
        st.sampled_from(_V4_SPECIAL + _V4_PUBLIC).map(ipaddress.IPv4Address),
        st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address),
    )


def carrying_v6(v4: ipaddress.IPv4Address) -> st.SearchStrategy[ipaddress.IPv6Address]:
    """IPv6 forms that reach ``v4``: mapped, compatible, NAT64 and 6to4."""
    value = int(v4)
    return st.sampled_from(
        [
            ipaddress.IPv6Address((0xFFFF << 32) | value),
            ipaddress.IPv6Address(value),
            ipaddress.IPv6Address((0x0064_FF9B << 96) | value),
            ipaddress.IPv6Address((0x2002 << 112) | (value << 80)),
        ]
    )


def hosts() -> st.SearchStrategy[str]:
    names = st.from_regex(r"[a-z][a-z0-9-]{0,12}(\.[a-z]{2,6}){0,2}", fullmatch=True)
    v6 = st.one_of(
        v4_addresses().flatmap(carrying_v6),
        st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address),
        st.sampled_from(["::1", "fe80::1", "fc00::1", "2001:db8::1", "2606:4700::1111"]).map(
            ipaddress.IPv6Address
        ),
    )
    return st.one_of(
        names,
        v4_addresses().map(str),
        v6.map(lambda a: f"[{a}]"),
        st.sampled_from(["127.1", "2130706433", "0x7f.1", "[::1", "::1", "[::1]x", "", "a b"]),
        st.text(max_size=12),
    )


def urls() -> st.SearchStrategy[str]:
    schemes = st.sampled_from(["https", "http", "ftp", "HTTPS", "javascript", ""])
    ports = st.one_of(
        st.just(""),
        st.integers(-5, 70000).map(lambda p: f":{p}"),
        st.sampled_from([":abc", ":", ":0", ":65535", ":99999", ": 80"]),
    )
    users = st.sampled_from(["", "user@", "user:pass@", "@"])
    paths = st.sampled_from(["", "/", "/hook?x=1", "/a b", "/%00", "#frag"])
    built = st.builds(
        lambda s, u, h, p, q: f"{s}://{u}{h}{p}{q}", schemes, users, hosts(), ports, paths
    )
    # Well-shaped https URLs to literal addresses, so the address policy itself is exercised
    # as often as the parser's refusals.
    literal = st.one_of(
        v4_addresses().map(str),
        v4_addresses().flatmap(carrying_v6).map(lambda a: f"[{a}]"),
        st.integers(0, 2**128 - 1).map(lambda v: f"[{ipaddress.IPv6Address(v)}]"),
    )
    shaped = st.builds(
        lambda h, p: f"https://{h}{p}/hook",
        literal,
        st.one_of(st.just(""), st.integers(1, 65535).map(lambda p: f":{p}")),
    )
    return st.one_of(shaped, shaped, built, st.text(max_size=60))


def public_oracle(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        value = int(address)
        if value >> 32 in (0, 0xFFFF) or value >> 32 == 0x0064_FF9B << 64:
            return public_oracle(ipaddress.IPv4Address(value & 0xFFFF_FFFF))
        if value >> 112 == 0x2002:
            return public_oracle(ipaddress.IPv4Address((value >> 80) & 0xFFFF_FFFF))
        if value >> 96 == 0x2001_0000:  # Teredo
            return False
    return address.is_global and not (address.is_multicast or address.is_reserved)


@settings(max_examples=600, deadline=None, derandomize=True)
@given(url=urls())
@example(url="https://h:99999/")
@example(url="https://h:abc/")
@example(url="https://[::1")
@example(url="https://[::ffff:127.0.0.1]/")
@example(url="https://[64:ff9b::a00:1]/")
@example(url="https://[2002:7f00:1::]/")
def test_a_url_is_refused_with_our_error_or_accepted_only_when_its_address_is_public(
    url: str,
) -> None:
    refused: InvalidRequest | Forbidden | None = None
    try:
        target = parse_webhook_url(url, allow_http=False, allow_private=False)
    except (InvalidRequest, Forbidden) as exc:
        refused = exc
    if refused is not None:
        assert refused.field == "webhook"
        OUTCOMES[type(refused).__name__] += 1
        return
    OUTCOMES["accepted"] += 1
    assert target.scheme == "https"
    assert 1 <= target.port <= 65535
    if target.address is not None:
        assert public_oracle(target.address), f"{url} reaches {target.address}"


def test_the_fuzz_reached_every_outcome() -> None:
    # Runs after the fuzz in file order; on its own it runs the fuzz first.
    if not OUTCOMES:
        test_a_url_is_refused_with_our_error_or_accepted_only_when_its_address_is_public()
    print(f"\nwebhook URL fuzz outcomes: {dict(OUTCOMES)}")
    assert set(OUTCOMES) == {"accepted", "InvalidRequest", "Forbidden"}


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(url=urls())
def test_no_stored_url_breaks_a_monitor_pass(gateway: Gateway, fakes: Fakes, url: str) -> None:
    # As if written before the check existed: straight into the store, never through submit.
    job = new_job(
        gateway,
        job_id=f"j{len(fakes.jobs.all())}",
        principal=ALICE,
        request=CustomVoiceRequest(text="Hi.", speaker="ryan"),
        backend="home-4090",
        key=None,
    )
    hook = Webhook(url=url).queued(WebhookEvent.COMPLETED, now=fakes.clock())
    fakes.jobs.create(job.model_copy(update={"webhook": hook, "state": JobState.QUEUED}))
    fakes.clock.advance(3600)
    run_monitor(gateway)  # raises nothing, whatever the URL


@pytest.fixture(autouse=True, scope="module")
def _report() -> object:
    yield None
    if OUTCOMES:
        print(f"\nwebhook URL fuzz outcomes: {dict(OUTCOMES)}")
