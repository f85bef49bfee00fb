"""``gateway_realtime.decorators``: ``no_store_secrets``, the per-view twin of the middleware."""

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.http import HttpResponse
from django.test import RequestFactory
from django.urls import path

from gateway_realtime.decorators import no_store_secrets
from gateway_realtime.testing import fake_gateway
from tests.test_middleware import public_page, render_page, template_page, token_of

urlpatterns = [
    path("decorated/", no_store_secrets(public_page)),
    path("decorated-template/", no_store_secrets(template_page)),
]

pytestmark = [pytest.mark.urls(__name__), pytest.mark.django_db]


@pytest.fixture(autouse=True)
def fake():
    with fake_gateway() as fake:
        yield fake


@pytest.mark.parametrize("url", ["/decorated/", "/decorated-template/"])
def test_decorator(client, user, url):
    client.force_login(user)
    response = client.get(url)
    assert token_of(response)
    assert response["Cache-Control"] == "no-store, private"


def test_decorator_on_async_view(user):
    request = RequestFactory().get("/")
    request.user = user

    @no_store_secrets
    async def view(request):
        return HttpResponse(await sync_to_async(render_page)(request))

    response = async_to_sync(view)(request)
    assert response["Cache-Control"] == "no-store, private"
