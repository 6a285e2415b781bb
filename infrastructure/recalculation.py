"""Loading the team's recalculation that POSTSAVE_RECALCULATION names."""

from __future__ import annotations

import importlib

from domain.recalculation import Recalculation
from infrastructure.settings import SettingsError


def load_recalculation(name: str) -> Recalculation:
    """The function `module:function` names; SettingsError, in one line, if there is none."""
    module_name, _, function_name = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise SettingsError(
            f"POSTSAVE_RECALCULATION={name!r}: cannot import {module_name} ({error}); "
            "is it on the workers' Python path?"
        ) from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise SettingsError(
            f"POSTSAVE_RECALCULATION={name!r}: {module_name} has no function {function_name}"
        )
    return function
