from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.urls import include, path


@login_required
def page(request: HttpRequest) -> HttpResponse:
    """The rest of the site: a logged-in page (a session and a user read, no Gateway)."""
    return HttpResponse(b"<p>A page of the site.</p>")


urlpatterns = [
    path("api/realtime-token/", include("gateway_realtime.urls")),
    path("page/", page),
]
