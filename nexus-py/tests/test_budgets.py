"""Cost on every result and budgets on keys, sync and asyncio: the `nexus` entry of a chat
result, the stream summary's cost, `key_spend`, `InsufficientQuotaError` past a budget, bad
budgets refused, and the explicit repricing."""

from __future__ import annotations

from typing import Any, Dict

import pytest

import nexus
from support import unique, user

# $1000 per million tokens in and out: the mock's 10 prompt + 2 completion tokens of a
# two-word echo cost $0.012.
PRICES = {"input_price": 1000.0, "output_price": 1000.0}
ONE = 0.012


def priced(hub: nexus.Hub, provider: Dict[str, Any]) -> str:
    name = unique("echo")
    hub.create_model(provider["id"], name, **PRICES)
    return name


@pytest.mark.asyncio
async def test_cost_on_every_result_sync_and_async(hub: nexus.Hub, provider: Dict[str, Any]) -> None:
    m = priced(hub, provider)
    sync = hub.chat(m, user("two words"))
    asynchronous = await hub.achat(m, user("two words"))
    assert sync["nexus"]["cost_usd"] == pytest.approx(ONE)
    assert asynchronous["nexus"]["cost_usd"] == pytest.approx(ONE)
    with hub.chat_stream(m, user("two words")) as s:
        assert "".join(c["choices"][0]["delta"].get("content") or "" for c in s if c["choices"])
    assert s.summary is not None and s.summary["cost_usd"] == pytest.approx(ONE)
    s2 = await hub.achat_stream(m, user("two words"))
    async for _ in s2:
        pass
    assert s2.summary is not None and s2.summary["cost_usd"] == pytest.approx(ONE)


@pytest.mark.asyncio
async def test_a_total_budget_refuses_past_it(hub: nexus.Hub, provider: Dict[str, Any]) -> None:
    m = priced(hub, provider)
    k = hub.create_key("capped", budget_usd=0.02, budget_period="total", soft_budget_usd=0.01)
    assert (k["budget_usd"], k["budget_period"], k["soft_budget_usd"]) == (0.02, "total", 0.01)
    hub.chat(m, user("two words"), api_key=k["key"])
    await hub.achat(m, user("two words"), api_key=k["key"])
    with pytest.raises(nexus.InsufficientQuotaError) as e:
        hub.chat(m, user("two words"), api_key=k["key"])
    assert isinstance(e.value, nexus.RateLimitError)
    assert (e.value.status_code, e.value.code, e.value.kind) == (429, "insufficient_quota", "insufficient_quota")
    assert e.value.retry_after is None  # a total budget never rolls over
    with pytest.raises(nexus.InsufficientQuotaError):
        await hub.achat(m, user("two words"), api_key=k["key"])
    spend = hub.key_spend(k["id"])
    assert spend["spent_usd"] == pytest.approx(2 * ONE)
    assert spend["budget_left_usd"] == 0.0
    assert spend["budget_reached"] and spend["soft_budget_reached"]
    assert (spend["period"], spend["period_start"], spend["period_end"]) == ("total", 0, None)
    # Raised: served again from the next request.
    hub.update_key(k["id"], budget_usd=1.0)
    hub.chat(m, user("two words"), api_key=k["key"])
    assert hub.key_spend(k["id"])["spent_usd"] == pytest.approx(3 * ONE)


def test_bad_budgets_are_refused(hub: nexus.Hub) -> None:
    for bad in ({"budget_usd": -1.0}, {"budget_usd": "ten"}, {"budget_period": "yearly", "budget_usd": 1.0},
                {"budget_usd": 1.0, "soft_budget_usd": 2.0}):
        with pytest.raises(nexus.BadRequestError):
            hub.create_key("bad", **bad)
    assert hub.keys() == []


def test_repricing_is_explicit(hub: nexus.Hub, provider: Dict[str, Any]) -> None:
    name = unique("echo")
    model = hub.create_model(provider["id"], name)
    hub.chat(name, user("two words"))
    assert hub.summary()["unpriced_requests"] == 1
    hub.update_model(model["id"], **PRICES)
    assert hub.summary()["unpriced_requests"] == 1, "a price change does not reprice history"
    dry = hub.reprice(dry_run=True)
    assert (dry["rows_changed"], dry["dry_run"]) == (1, True)
    done = hub.reprice()
    assert done["rows_changed"] == 1
    assert done["cost_after_usd"] == pytest.approx(ONE)
    assert hub.summary()["unpriced_requests"] == 0
    assert hub.summary()["cost"] == pytest.approx(ONE)
    with pytest.raises(nexus.BadRequestError):
        hub.reprice(since=100, until=50)
