"""Bench-only views: the framework's own cost, and the page with and without the tag."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from gateway_realtime.views import ClientSecretView


class NoopView(APIView):
    """Everything the mint endpoint does before and after minting, and nothing else.

    Same authentication (session + same-origin check), permission, parser and
    renderer as ``ClientSecretView``, so the difference between the two is the
    mint itself: validation, audit writes and the Gateway round trip.
    """

    authentication_classes = ClientSecretView.authentication_classes
    permission_classes = ClientSecretView.permission_classes
    parser_classes = ClientSecretView.parser_classes
    renderer_classes = ClientSecretView.renderer_classes
    http_method_names = ["post"]

    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        if not isinstance(request.data, dict):
            return Response({"ok": False}, status=400)
        return Response({"ok": True})


@login_required
def page_plain(request: HttpRequest) -> HttpResponse:
    return render(request, "bench/page.html")


@login_required
def page_tag(request: HttpRequest) -> HttpResponse:
    return render(request, "bench/page_tag.html")
