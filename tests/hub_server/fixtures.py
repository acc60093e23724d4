"""Pytest fixtures: ``hub`` (server + patched in-process client + temp HF_HOME) and ``hub_api`` (an ``HfApi`` for
alice). Import them into a test module (``from tests.hub_server import hub, hub_api``)."""

from __future__ import annotations

from .model import ALICE_TOKEN
from .server import HubServer


try:
    import pytest
except ImportError:  # pragma: no cover
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture
    def hub(tmp_path):
        """A running HubServer; the in-process huggingface_hub points at it with HF_HOME=tmp_path/'hf_home'."""
        with HubServer(root=tmp_path / "hub_storage") as server:
            with server.patch_client(hf_home=tmp_path / "hf_home"):
                yield server
            if server.errors:
                raise AssertionError("fake hub raised server-side errors:\n" + "\n".join(server.errors))

    @pytest.fixture
    def hub_api(hub):
        """``HfApi`` authenticated as alice against the ``hub`` fixture."""
        from huggingface_hub import HfApi

        return HfApi(endpoint=hub.endpoint, token=ALICE_TOKEN)
