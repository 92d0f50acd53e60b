"""``require_asset``: a test that needs a real asset skips without it, but fails in CI."""
from __future__ import annotations

import pytest
from conftest import require_asset

from tools.assets import AssetUnavailableError


def unavailable() -> str:
    raise AssetUnavailableError('no network and no cached copy')


def test_missing_asset_skips_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv('CI', raising=False)
    with pytest.raises(pytest.skip.Exception, match='photos unavailable: no network'):
        require_asset(unavailable, 'photos')


def test_missing_asset_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv('CI', 'true')
    with pytest.raises(pytest.fail.Exception, match='make env'):
        require_asset(unavailable, 'photos')


def test_available_asset_is_returned(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv('CI', 'true')
    assert require_asset(lambda: 'path', 'photos') == 'path'
