"""User code running inside every call of both tables, changing the table under it.

Each public method that converts an argument or releases a value, attacked
through each channel user code has into it (a key's ``__hash__``, a key's
``__eq__`` met in the middle of the lookup, an int-subclass key's
``__hash__``/``__eq__``, a ``__float__``, a released
value's ``__del__``, the garbage collector at threshold 1) with each hook
(clear, growth, deletion, re-adding, moving the clock on, touching, re-arming):
no crash, no internal error, only success or a documented exception, the
clock never moving backwards, and the table consistent and complete after
(see ``reentrancy`` and ``table_checks``).
"""

from __future__ import annotations

import pytest

from reentrancy import HOOKS, attack, cases, frozen_heap

_frozen_heap = pytest.fixture(scope="module", autouse=True)(frozen_heap)


@pytest.mark.parametrize("hook", sorted(HOOKS))
@pytest.mark.parametrize(("call", "channel"), cases())
def test_user_code_inside_a_call_cannot_break_the_table(Table: type, call: str, channel: str, hook: str) -> None:
    attack(Table, call, channel, hook)
