"""The demo page: a realtime conversation through the Gateway (or its emulator)."""

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from gateway_realtime.decorators import no_store_secrets


@login_required
@no_store_secrets
def home(request: HttpRequest) -> HttpResponse:
    """Render the page; its template mints a secret with ``{% gateway_realtime_config %}``."""
    return render(request, "example_project/home.html")
