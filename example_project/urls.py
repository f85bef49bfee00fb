from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from example_project import views

urlpatterns = [
    path("", views.home, name="home"),
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("api/realtime-token/", include("gateway_realtime.urls")),
]
