"""View decorators for pages that carry client secrets."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from asgiref.sync import iscoroutinefunction

from gateway_realtime.middleware import protect_response

ViewFunc = TypeVar("ViewFunc", bound=Callable[..., Any])


def no_store_secrets(view_func: ViewFunc) -> ViewFunc:
    """Make the view's response ``Cache-Control: no-store, private`` when its page got a secret.

    The per-view twin of ``NoStoreSecretsMiddleware``: use either. Works on
    sync and async function views and on ``TemplateResponse`` (the header is
    set once the template has rendered, since only rendering runs the tag).
    """
    if iscoroutinefunction(view_func):

        @wraps(view_func)
        async def async_wrapper(request: Any, *args: Any, **kwargs: Any) -> Any:
            response = await view_func(request, *args, **kwargs)
            return protect_response(request, response)

        return async_wrapper  # type: ignore[return-value]

    @wraps(view_func)
    def wrapper(request: Any, *args: Any, **kwargs: Any) -> Any:
        response = view_func(request, *args, **kwargs)
        return protect_response(request, response)

    return wrapper  # type: ignore[return-value]
