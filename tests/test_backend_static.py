"""The static backend (the model for the others) keeps the shared backend contract."""

from __future__ import annotations

import pytest

from fingerd.testing import BackendContract, World


class TestStaticContract(BackendContract):
    @pytest.fixture
    def world(self) -> World:
        return World(table={"type": "static", "users": {"moshez": "Happy and well"}},
                     known="moshez", expect="Happy and well",
                     bad_options=[("users", "not a table"), ("list", 42)])
