from __future__ import annotations

import pytest

from gateway.bandit.reweigher import BanditRunner
from gateway.bandit.spec import BanditSection
from gateway.bandit.thompson import ArmRewards
from gateway.config.settings import ConfigError, load_settings
from gateway.routing.router import RoutingReason
from gateway.routing.table import RoutingTable

ARMS = [{"name": n, "model_uri": f"models:/M/{i + 1}"} for i, n in enumerate(["a", "b", "c"])]


def settings(**bandit: object):
    return load_settings(None, routing={"mode": "bandit"}, variants=ARMS, bandit=bandit)


def test_bandit_mode_starts_with_equal_weights_and_learns() -> None:
    s = settings(burn_in=10, update_seconds=1)
    table = RoutingTable(s.routing_config())
    assert table.router.weights == {"a": 0.3334, "b": 0.3333, "c": 0.3333}
    sums = {"a": ArmRewards(200, 180.0, 180.0), "b": ArmRewards(200, 100.0, 100.0), "c": ArmRewards(9, 0.0, 0.0)}
    runner = BanditRunner(s.bandit, table, lambda: sums, lock_path=None, seed=0)
    assert runner.step().phase == "burn_in"  # c has 9 labels of 10
    sums["c"] = ArmRewards(10, 0.0, 0.0)
    result = runner.step()
    assert result.phase == "thompson"
    assert table.router.weights == {"a": 0.98, "b": 0.01, "c": 0.01}
    assert table.origin.source == "bandit" and table.router.version == table.origin.version
    assert table.router.assignment_probability("a", RoutingReason.WEIGHTED) == 0.98
    assert table.router.assignment_probability("b", RoutingReason.FORCED) == 1.0
    body = runner.describe()
    assert body["arms"]["a"]["weight"] == 0.98 and body["arms"]["c"]["labelled"] == 10
    assert body["phase"] == "thompson" and body["reweighs_here"] is True


def test_sticky_users_of_an_arm_that_keeps_its_weight_stay() -> None:
    s = settings(burn_in=1)
    table = RoutingTable(s.routing_config())
    users = [f"user-{i}" for i in range(3000)]
    before = {u: table.router.sticky_variant(u) for u in users}
    table.change(weights={"a": 0.3334, "b": 0.5, "c": 0.1666}, source="test")
    after = {u: table.router.sticky_variant(u) for u in users}
    assert all(after[u] == "a" for u in users if before[u] == "a")  # a kept its weight: none of its users moved
    moved = sum(before[u] != after[u] for u in users) / len(users)
    assert moved == pytest.approx(0.1667, abs=0.03)  # what c gave up, and no more


@pytest.mark.parametrize(("bandit", "extra", "message"), [
    ({"reward": "accuracy"}, {}, "bandit.reward"),
    ({"min_share": 0.4}, {}, "bandit.min_share: 0.4 times 3 variants"),
    ({"reward": "negative_abs_error"}, {"model": {"kind": "classifier"}}, "needs a regressor"),
    ({}, {"spool": {"enabled": False}}, "spool.enabled = false"),
])
def test_bad_bandit_config_stops_start_up_naming_the_key(bandit: dict, extra: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(None, routing={"mode": "bandit"}, variants=ARMS, bandit=bandit, **extra)


def test_a_bandit_section_without_bandit_mode_says_so() -> None:
    s = load_settings(None, variants=ARMS, bandit={"burn_in": 5})
    assert any("[bandit] is used only with" in n for n in s.notices)
    assert isinstance(BanditSection(), BanditSection)


def test_feedback_rewards_are_read_from_the_spool_one_per_unit(tmp_path) -> None:
    """Counted labels only: the first each unit gave a version. Rewards stored outside the range (by an
    earlier release) are skipped, so that they cannot break every reweighting after a restart."""
    from gateway.bandit.rewards import SpoolRewards
    from gateway.bandit.spec import Reward
    from gateway.spool.store import PredictionSpool
    from tests.harness.records import rec

    spool = PredictionSpool(tmp_path)
    records = [rec(i, version="a" if i % 2 else "b") for i in range(6)]
    big = [rec(100, version="b", row=k) for k in range(50)]  # one request of 50 rows
    spool.append_many(records)
    spool.append_many(big)
    for r in records:
        spool.labels.append(r, "Setosa", None, None, reward=2.0 if r.model_version == "a" else -1.0, trust="token",
                            unit=f"request:{r.request_id}")
    for r in big:  # 50 labels of one unit: one counts
        assert spool.labels.append(r, "Setosa", None, None, reward=9.0, trust="receipt",
                                   unit="request:r100") is (r.row_index == 0)
    section = BanditSection(reward=Reward.FEEDBACK, reward_range=(-10.0, 10.0))
    sums = SpoolRewards(spool.db, section).read()
    assert sums["a"].n == 3 and sums["a"].mean == 2.0
    assert sums["b"].n == 4 and sums["b"].total == -3.0 + 9.0
    narrow = SpoolRewards(spool.db, BanditSection(reward=Reward.FEEDBACK, reward_range=(-1.0, 1.0)))
    assert narrow.read()["b"].n == 3 and "a" not in narrow.sums and narrow.skipped == 4
    spool.close()
