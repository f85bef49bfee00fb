import importlib.util

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView

from example_project import views
from example_project.demo import DEMO_PASSWORD, DEMO_USERNAME

urlpatterns = [
    path("", views.home, name="home"),
    path("admin/", admin.site.urls),
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(
            # The account `make demo` creates, shown on the page so nobody
            # has to find the terminal that printed it.
            extra_context={"demo_username": DEMO_USERNAME, "demo_password": DEMO_PASSWORD}
        ),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("api/realtime-token/", include("gateway_realtime.urls")),
    # Browsers ask for /favicon.ico whatever the page's <link rel="icon"> says.
    path("favicon.ico", RedirectView.as_view(url=static("example_project/favicon.svg"))),
]

# The OpenAPI schema and a page of it, with the `openapi` extra (docs/openapi.md).
if importlib.util.find_spec("drf_spectacular") is not None:
    from drf_spectacular.views import SpectacularAPIView

    urlpatterns += [
        path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
        path("api/schema/page/", views.schema_page, name="schema-page"),
    ]

# This process's Prometheus metrics, with the `metrics` extra (docs/metrics.md).
# The demo runs on 127.0.0.1; a real site keeps /metrics private.
if importlib.util.find_spec("prometheus_client") is not None:
    from django.http import HttpRequest, HttpResponse
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    def metrics(request: HttpRequest) -> HttpResponse:
        return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)

    urlpatterns += [path("metrics", metrics, name="metrics")]
