"""Keep pages that carry a client secret out of every cache.

The ``gateway_realtime_config`` template tag marks the request when it puts a
secret into a page (``mark_secret_in_response``). ``NoStoreSecretsMiddleware``
(or the ``gateway_realtime.decorators.no_store_secrets`` view decorator) then
makes that response ``Cache-Control: no-store, private``, whatever the view
set, so no browser, proxy or CDN keeps or shares it.

Django's own page cache needs more than a header: ``UpdateCacheMiddleware``
and ``cache_page`` decide whether to store a page from
``request._cache_update_cache``, which ``FetchFromCacheMiddleware`` sets before
the view runs. The tag runs while the page renders, which is after that and
before the cache's own ``process_response`` (or, for a ``TemplateResponse``
under ``cache_page``, its post-render callback), so clearing that flag from
the tag stops the page from being stored wherever the middleware sits.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponseBase
from django.utils.cache import patch_cache_control, patch_vary_headers

#: Attribute set on the request (the ``HttpRequest``) that carries a secret.
REQUEST_MARK = "_gateway_realtime_secret_in_response"


def mark_secret_in_response(request: HttpRequest) -> None:
    """Record that the response to ``request`` will carry a client secret.

    Also tells Django's cache middleware and ``cache_page`` not to store it.
    """
    setattr(request, REQUEST_MARK, True)
    _keep_out_of_djangos_page_cache(request)


def _keep_out_of_djangos_page_cache(request: HttpRequest) -> None:
    """Stop ``UpdateCacheMiddleware`` and ``cache_page`` from storing this response.

    The one private hook this app uses, because it is the only way: under
    ``cache_page`` a ``TemplateResponse`` is stored by a post-render callback
    right after the template (and so this tag) renders, before any middleware
    or decorator can mark it ``no-store``. What Django checks first is
    ``request._cache_update_cache`` (set by ``FetchFromCacheMiddleware`` before
    the view runs). tests/test_middleware.py fails if Django stops reading it.
    """
    request._cache_update_cache = False  # type: ignore[attr-defined]


def response_carries_secret(request: HttpRequest) -> bool:
    """Whether a template tag put a client secret into the response to ``request``."""
    return bool(getattr(request, REQUEST_MARK, False))


def protect_response(request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
    """Make ``response`` uncacheable if ``request`` is marked, now or once it renders.

    A ``TemplateResponse`` that is not rendered yet (a view decorator sees it
    before the handler renders it) gets a post-render callback instead, since
    only rendering runs the tag.
    """
    render = getattr(response, "render", None)
    if callable(render) and not getattr(response, "is_rendered", True):
        response.add_post_render_callback(  # type: ignore[attr-defined]
            lambda rendered: _apply_no_store(request, rendered)
        )
        return response
    _apply_no_store(request, response)
    return response


def _apply_no_store(request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
    if not response_carries_secret(request):
        return response
    # Replace, not merge: a view's "public, max-age=600" must not survive.
    del response["Cache-Control"]
    patch_cache_control(response, no_store=True, private=True)
    response["Pragma"] = "no-cache"
    for header in ("Expires", "ETag", "Last-Modified"):
        if header in response:
            del response[header]
    patch_vary_headers(response, ("Cookie",))
    return response


class NoStoreSecretsMiddleware:
    """Mark every response whose page carries a client secret ``no-store, private``.

    Put it first in ``MIDDLEWARE`` (or right after
    ``UpdateCacheMiddleware``) so that no later response middleware can undo
    the header. Works under WSGI and ASGI.
    """

    sync_capable = True
    async_capable = True

    def __init__(
        self,
        get_response: Callable[[HttpRequest], HttpResponseBase]
        | Callable[[HttpRequest], Awaitable[HttpResponseBase]],
    ) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        response = self.get_response(request)
        return protect_response(request, response)  # type: ignore[arg-type]

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        response = await self.get_response(request)  # type: ignore[misc]
        return protect_response(request, response)
