"""With DJANGO_DEBUG on, the browsable API works with a session login (a development aid)."""

from http import HTTPStatus

import pytest
from django.conf import settings
from django.urls import reverse

from .factories import TEST_PASSWORD, ConversationFactory

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(
        not settings.BROWSABLE_API, reason="the browsable API is on only with DJANGO_DEBUG=true"
    ),
]


def test_session_login_then_browse_own_conversations_as_html(client, user, other_user):
    mine = ConversationFactory.create(user=user, title="Mine")
    theirs = ConversationFactory.create(user=other_user, title="Theirs")

    login = client.post(
        reverse("rest_framework:login"), {"username": user.username, "password": TEST_PASSWORD}
    )
    page = client.get(reverse("conversation-list"), HTTP_ACCEPT="text/html")

    assert login.status_code == HTTPStatus.FOUND
    assert page.status_code == HTTPStatus.OK
    assert page["Content-Type"].startswith("text/html")
    html = page.content.decode()
    assert str(mine.pk) in html
    assert str(theirs.pk) not in html


def test_without_login_the_html_api_is_401(client):
    assert (
        client.get(reverse("conversation-list"), HTTP_ACCEPT="text/html").status_code
        == HTTPStatus.UNAUTHORIZED
    )
