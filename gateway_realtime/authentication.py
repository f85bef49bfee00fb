"""Session authentication that accepts the AI SDK's plain same-origin ``fetch``.

The AI SDK's realtime setup call sends the session cookie and a JSON body but
no CSRF token. Instead of exempting the view from CSRF protection, this class
replaces the token check with a same-origin check that is at least as strong:

- a request with a valid CSRF token passes, as before;
- otherwise the body must be ``application/json`` (which a cross-site page
  cannot send without a CORS preflight), and
- ``Sec-Fetch-Site``, when sent, must be ``same-origin``, and
- ``Origin``, when sent, must be trusted: this site's origin or an exact
  entry of ``CSRF_TRUSTED_ORIGINS`` (``gateway_realtime.origins``, the rule
  the relay applies too; wildcard entries are not honoured), and
- at least one of those two headers must be present (every browser that can
  run the realtime API sends both on a POST).
"""

from __future__ import annotations

from django.http import HttpRequest
from rest_framework import exceptions
from rest_framework.authentication import SessionAuthentication
from rest_framework.request import Request

from gateway_realtime import origins

JSON_MEDIA_TYPE = "application/json"


class CrossSiteRequestRejected(exceptions.PermissionDenied):
    default_detail = "Cross-site request rejected: this endpoint accepts same-origin requests only."
    default_code = "cross_site_request"


def request_origin(request: HttpRequest) -> str:
    """This site's origin as the browser sees it (``scheme://host[:port]``)."""
    return f"{request.scheme}://{request.get_host()}".lower()


def is_trusted_origin(request: HttpRequest, origin: str) -> bool:
    """Whether ``origin`` is trusted for ``request``: ``origins.is_trusted_origin``."""
    return origins.is_trusted_origin(origin, site_origin=request_origin(request))


def check_same_origin(request: HttpRequest) -> None:
    """Raise unless ``request`` is a same-origin JSON request (see module docstring)."""
    if request.content_type != JSON_MEDIA_TYPE:
        raise exceptions.UnsupportedMediaType(
            request.content_type or "(none)",
            detail="Send the request body as application/json.",
        )
    fetch_site = request.META.get("HTTP_SEC_FETCH_SITE")
    origin = request.META.get("HTTP_ORIGIN")
    if fetch_site is None and origin is None:
        raise CrossSiteRequestRejected(
            "Cross-site request rejected: neither Origin nor Sec-Fetch-Site was sent."
        )
    if fetch_site is not None and fetch_site.strip().lower() != "same-origin":
        raise CrossSiteRequestRejected()
    if origin is not None and not is_trusted_origin(request, origin):
        raise CrossSiteRequestRejected()


class SameOriginSessionAuthentication(SessionAuthentication):
    """``SessionAuthentication`` with the same-origin check in place of a required CSRF token."""

    def enforce_csrf(self, request: Request) -> None:
        try:
            super().enforce_csrf(request)
        except exceptions.PermissionDenied:
            check_same_origin(request._request)
