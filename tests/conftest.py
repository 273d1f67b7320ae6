"""Shared pytest configuration: fixture plugins live in ``tests/fixtures/``."""

from __future__ import annotations

pytest_plugins: list[str] = [
    "tests.fixtures.runs",
    "tests.fixtures.models",
    "tests.fixtures.tim_checkpoint",
    "tests.fixtures.s2_scenes",
    "tests.fixtures.reference_data",
    "tests.fixtures.stac_api",
    "tests.fixtures.app_server",
]
