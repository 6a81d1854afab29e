"""Scheduled rules in the embedded stack: moto never fires rate() rules; the local stack's
scheduler does (yilian_local.scheduler), so the booking no-show sweep runs locally too."""

from __future__ import annotations

import pytest

from yilian_local.scheduler import rate_seconds

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("expression", "seconds"),
    [("rate(15 minutes)", 900), ("rate(1 minute)", 60), ("rate(2 hours)", 7200),
     ("rate(1 day)", 86400), ("cron(0 12 * * ? *)", None), ("rate(soon)", None)],
)  # fmt: skip
def test_rate_expressions(expression, seconds):
    assert rate_seconds(expression) == seconds


def test_the_template_s_scheduled_sweep_is_found_and_fires(local_stack):
    # Given the deployed template's rate() rules
    rules = {rule["Name"]: seconds for rule, seconds in local_stack.scheduler.rules()}
    # Then the booking sweep is among them, every 15 minutes
    sweep = [name for name in rules if "BookingSweep" in name]
    assert sweep and rules[sweep[0]] == 900
    # and firing it runs the real handler (no appointment is due: nothing marked)
    fired = local_stack.scheduler.fire_all()
    assert fired[sweep[0]] == [{"marked": 0}]
