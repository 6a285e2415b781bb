"""Settings from the environment: what each knob accepts."""

from __future__ import annotations

import pytest

from infrastructure.settings import Settings, SettingsError


def test_coalescing_can_be_turned_off_with_zero() -> None:
    assert Settings.from_env({"POSTSAVE_COALESCE_LIMIT": "0"}).coalesce_limit == 0
    assert Settings.from_env({}).coalesce_limit == 500


@pytest.mark.parametrize("name", ["POSTSAVE_BATCH_SIZE", "POSTSAVE_MAX_IN_FLIGHT"])
def test_zero_is_refused_where_it_means_nothing(name: str) -> None:
    with pytest.raises(SettingsError, match=f"{name}='0' must be a finite number greater than 0$"):
        Settings.from_env({name: "0"})


def test_a_negative_coalesce_limit_says_what_zero_would_mean() -> None:
    with pytest.raises(SettingsError, match="or 0 for one pass per event"):
        Settings.from_env({"POSTSAVE_COALESCE_LIMIT": "-5"})
