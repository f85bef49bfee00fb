from django.urls import include, path

from bench import views

urlpatterns = [
    path("api/realtime-token/", include("gateway_realtime.urls")),
    path("bench/noop/", views.NoopView.as_view(), name="bench-noop"),
    path("bench/page/", views.page_plain, name="bench-page"),
    path("bench/page-tag/", views.page_tag, name="bench-page-tag"),
]
