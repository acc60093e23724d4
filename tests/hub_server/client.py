"""Client configuration: point the unmodified huggingface_hub client (in-process or in a subprocess) at a
fake hub, and switch off its retry sleeps."""

from __future__ import annotations

import contextlib
import os
import sys
import time
import types
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit


_ENV_TO_REMOVE = (
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "HUGGINGFACE_CO_STAGING",
    "HUGGINGFACE_HUB_CACHE",
    "HUGGINGFACE_ASSETS_CACHE",
    "HF_ASSETS_CACHE",
    "HF_TOKEN_PATH",
    "HF_XET_CACHE",
    "HF_HUB_ENABLE_HF_TRANSFER",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_TOKEN",
)


def hf_client_env(
    endpoint: str, hf_home: str | os.PathLike, *, token: str | None = None, base: dict[str, str] | None = None
) -> dict[str, str]:
    """Environment for a *fresh* Python process whose huggingface_hub must talk to ``endpoint``.

    huggingface_hub reads these at import time (``constants.py``), so they must be set before the child imports it.
    """
    env = dict(os.environ if base is None else base)
    for key in _ENV_TO_REMOVE:
        env.pop(key, None)
    hf_home = os.fspath(hf_home)
    env.update(
        {
            "HF_ENDPOINT": endpoint,
            "HF_HUB_DISABLE_XET": "1",
            "HF_HOME": hf_home,
            "HF_HUB_CACHE": os.path.join(hf_home, "hub"),
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_UPDATE_CHECK": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        }
    )
    if token is not None:
        env["HF_TOKEN"] = token
    return env


_MISSING = object()


def _client_constants(endpoint: str, hf_home: str) -> dict[str, Any]:
    """The ``huggingface_hub.constants`` values that derive from the endpoint and HF_HOME (read at import time)."""
    hub_cache = os.path.join(hf_home, "hub")
    assets_cache = os.path.join(hf_home, "assets")
    xet_cache = os.path.join(hf_home, "xet")
    return {
        "ENDPOINT": endpoint,
        "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HUB_DISABLE_XET": True,
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_TELEMETRY": True,
        "HF_HUB_DISABLE_UPDATE_CHECK": True,
        "HF_HUB_DISABLE_IMPLICIT_TOKEN": False,
        "HF_HOME": hf_home,
        "default_cache_path": hub_cache,
        "default_assets_cache_path": assets_cache,
        "HUGGINGFACE_HUB_CACHE": hub_cache,
        "HUGGINGFACE_ASSETS_CACHE": assets_cache,
        "HF_HUB_CACHE": hub_cache,
        "HF_ASSETS_CACHE": assets_cache,
        "HF_TOKEN_PATH": os.path.join(hf_home, "token"),
        "HF_STORED_TOKENS_PATH": os.path.join(hf_home, "stored_tokens"),
        "default_xet_cache_path": xet_cache,
        "HF_XET_CACHE": xet_cache,
        "CHECK_FOR_UPDATE_DONE_PATH": os.path.join(hf_home, ".check_for_update_done"),
        "CHECK_FOR_SKILL_UPDATE_DONE_PATH": os.path.join(hf_home, ".check_for_skill_update_done"),
        "AGENT_HARNESSES_PATH": os.path.join(hf_home, ".agent_harnesses.json"),
    }


def _patch_client_modules(endpoint: str, hf_home: str, patch: Callable[[Any, str, Any], None]) -> None:
    """Patch what huggingface_hub computed at import time from the endpoint and HF_HOME (see patch_hf_client)."""
    import huggingface_hub.hf_api as hf_api_module
    from huggingface_hub import constants
    from huggingface_hub.utils import _http

    host = (urlsplit(endpoint).hostname or "").lower()
    for name, value in _client_constants(endpoint, hf_home).items():
        if hasattr(constants, name):
            patch(constants, name, value)
    if hasattr(constants, "HF_URL_HOSTS") and host:
        patch(constants, "HF_URL_HOSTS", frozenset(constants.HF_URL_HOSTS | {host}))
    if hasattr(_http, "_HUB_ORIGINS"):
        patch(_http, "_HUB_ORIGINS", frozenset(_http._HUB_ORIGINS | {_http._url_origin(endpoint)}))
    patch(hf_api_module.api, "endpoint", endpoint)
    for modname, attr, value in (
        ("huggingface_hub.utils._cache_manager", "HF_HUB_CACHE", os.path.join(hf_home, "hub")),
        ("huggingface_hub.utils._cache_assets", "HF_ASSETS_CACHE", os.path.join(hf_home, "assets")),
    ):
        module = sys.modules.get(modname)
        if module is not None and hasattr(module, attr):
            patch(module, attr, value)


def _restore(saved: list[tuple[Any, str, Any]], saved_env: dict[str, str | None]) -> None:
    """Undo the patches (newest first) and put the environment back as it was."""
    for obj, name, value in reversed(saved):
        if value is _MISSING:
            delattr(obj, name)
        else:
            setattr(obj, name, value)
    for key, value in saved_env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@contextlib.contextmanager
def patch_hf_client(endpoint: str, hf_home: str | os.PathLike, *, token: str | None = None) -> Iterator[None]:
    """Point the already-imported huggingface_hub at ``endpoint`` (and a private ``hf_home``), then restore.

    What 2.x reads where (so what must be patched in-process):
    - ``constants.ENDPOINT``: default endpoint of ``HfApi()`` instances created afterwards, of ``hf_hub_url`` &
      module-level helpers; ``constants.HUGGINGFACE_CO_URL_TEMPLATE`` is derived from it *at import time* and is
      what ``hf_hub_url`` formats (the endpoint is only substituted when ``endpoint=`` is passed explicitly);
    - ``huggingface_hub.hf_api.api``: the module-level ``HfApi()`` behind ``upload_file``, ``create_repo``,
      ``whoami``... captured ``constants.ENDPOINT`` at import time;
    - ``constants.HF_URL_HOSTS`` / ``utils._http._HUB_ORIGINS``: hosts trusted for redirects/auth (import time);
    - ``constants.HF_HUB_DISABLE_XET``: read at call time by ``is_xet_available()``;
    - cache/token paths (``HF_HUB_CACHE``, ``HF_TOKEN_PATH``, ...) are module constants derived from ``HF_HOME``;
      ``utils._cache_manager`` imported ``HF_HUB_CACHE`` by value.
    Environment variables are set too (and restored) so subprocesses and lazily-reading libraries agree.
    """
    import huggingface_hub  # noqa: F401
    from huggingface_hub.utils import _http

    hf_home = os.fspath(hf_home)
    os.makedirs(hf_home, exist_ok=True)
    saved: list[tuple[Any, str, Any]] = []

    def patch(obj: Any, name: str, value: Any) -> None:
        saved.append((obj, name, getattr(obj, name, _MISSING)))
        setattr(obj, name, value)

    saved_env = {key: os.environ.get(key) for key in set(_ENV_TO_REMOVE) | set(hf_client_env(endpoint, hf_home))}
    try:
        _patch_client_modules(endpoint, hf_home, patch)
        env = hf_client_env(endpoint, hf_home, token=token, base={})
        for key in _ENV_TO_REMOVE:
            os.environ.pop(key, None)
        os.environ.update(env)
        _http.close_session()
        yield
    finally:
        _restore(saved, saved_env)
        _http.close_session()


class _NoSleepTime(types.ModuleType):
    def __init__(self) -> None:
        super().__init__("time")

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        return None


@contextlib.contextmanager
def no_retry_sleep() -> Iterator[None]:
    """Make huggingface_hub's download/HTTP retry loops (``time.sleep(1)``, exponential backoff) not sleep.

    Patches only the ``time`` name inside ``huggingface_hub.file_download`` and ``huggingface_hub.utils._http``.
    """
    import huggingface_hub.file_download as file_download
    from huggingface_hub.utils import _http

    shim = _NoSleepTime()
    saved = [(file_download, file_download.time), (_http, _http.time)]
    try:
        for module, _ in saved:
            module.time = shim  # type: ignore[attr-defined]
        yield
    finally:
        for module, original in saved:
            module.time = original  # type: ignore[attr-defined]
