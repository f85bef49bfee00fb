"""The relay site's policy hook (``tests.relay.site_settings``): users named
``budget-*`` get two sessions at once and a budget of two seconds of audio,
so ``test_multiprocess`` can spend one budget from two servers."""

import dataclasses

BUDGET_SECONDS = 2.0


def relay_policy(user, kind, request, policy):
    if user.get_username().startswith("budget-"):
        return dataclasses.replace(policy, max_sessions=2, budget={"audio_seconds": BUDGET_SECONDS})
    return None
