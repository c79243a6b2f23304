"""/metrics: Prometheus text that moves with the traffic, open only to whom it should be."""

from http import HTTPStatus

import pytest
from django.db import connection
from django.urls import reverse
from prometheus_client.parser import text_string_to_metric_families

from conversations.tests.factories import ConversationFactory

pytestmark = pytest.mark.django_db

OUTSIDER = "203.0.113.7"


def scrape(client, **extra) -> dict[tuple[str, frozenset], float]:
    """Every sample of a scrape, keyed by name and labels."""
    response = client.get(reverse("metrics"), **extra)
    assert response.status_code == HTTPStatus.OK, response.content
    assert response["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_scrape_after_requests_finds_the_counters_moved(
    client, auth_client, user, django_capture_on_commit_callbacks
):
    conversation = ConversationFactory.create(user=user)
    list_labels = {"method": "GET", "view": "conversation-list", "status": "200"}
    append_labels = {"method": "POST", "view": "conversation-message-list", "status": "201"}
    before = scrape(client)

    auth_client.get(reverse("conversation-list"))
    auth_client.get(reverse("conversation-list"))
    auth_client.get(reverse("conversation-detail", args=["00000000-0000-4000-8000-000000000000"]))
    with django_capture_on_commit_callbacks(execute=True):
        appended = auth_client.post(
            reverse("conversation-message-list", args=[conversation.pk]), {"role": "user", "content": "hi"}
        )
    after = scrape(client)

    assert appended.status_code == HTTPStatus.CREATED

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("django_http_requests_total", **list_labels) == 2
    assert delta("django_http_request_duration_seconds_count", **list_labels) == 2
    assert delta("django_http_request_duration_seconds_sum", **list_labels) > 0
    assert delta("django_http_requests_total", method="GET", view="conversation-detail", status="404") == 1
    assert delta("django_http_requests_total", **append_labels) == 1
    assert delta("conversations_messages_appended_total") == 1
    db = {"alias": "default", "vendor": connection.vendor}
    assert delta("django_db_queries_total", **db) >= 4
    assert delta("django_db_query_duration_seconds_count", **db) >= 4
    # Labels name views, never paths with ids in them.
    assert not any(str(conversation.pk) in str(key) for key in after)


def test_an_appended_message_counts_only_when_it_commits(auth_client, user, client):
    conversation = ConversationFactory.create(user=user)
    before = value(scrape(client), "conversations_messages_appended_total")

    # The test's transaction never commits, so neither does the append.
    auth_client.post(
        reverse("conversation-message-list", args=[conversation.pk]), {"role": "user", "content": "x"}
    )

    assert value(scrape(client), "conversations_messages_appended_total") == before


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the connection pool is PostgreSQL's")
def test_pool_use_is_reported(client, settings):
    samples = scrape(client)

    pool = settings.DATABASES["default"]["OPTIONS"]["pool"]
    assert value(samples, "django_db_pool_connections", alias="default", state="max") == pool["max_size"]
    assert value(samples, "django_db_pool_connections", alias="default", state="size") >= 1
    assert ("django_db_pool_requests_waiting", frozenset({("alias", "default")})) in samples


# --- who may scrape ---------------------------------------------------------------------------


@pytest.mark.parametrize("address", ["127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1"])
def test_loopback_clients_may_scrape(client, address):
    assert client.get(reverse("metrics"), REMOTE_ADDR=address).status_code == HTTPStatus.OK


@pytest.mark.parametrize("address", [OUTSIDER, "10.0.0.5", "2001:db8::1", "", "not-an-address"])
def test_other_clients_are_refused(client, address):
    response = client.get(reverse("metrics"), REMOTE_ADDR=address)

    assert response.status_code == HTTPStatus.FORBIDDEN
    assert b"django_http_requests" not in response.content


def test_a_forwarded_loopback_address_does_not_let_an_outsider_in(client):
    response = client.get(reverse("metrics"), REMOTE_ADDR=OUTSIDER, HTTP_X_FORWARDED_FOR="127.0.0.1")

    assert response.status_code == HTTPStatus.FORBIDDEN


def test_only_the_peer_is_judged_never_a_forwarded_address(client, settings):
    """The proxy does not pass /metrics on, so a scrape comes straight to the service and its
    X-Forwarded-For is the caller's own word, trusted proxies or not."""
    settings.API_TRUSTED_PROXIES = 1
    settings.METRICS_ALLOWED_NETWORKS = ["10.0.0.0/8"]

    forged = client.get(reverse("metrics"), REMOTE_ADDR="172.18.0.9", HTTP_X_FORWARDED_FOR="10.1.2.3")
    scraper = client.get(reverse("metrics"), REMOTE_ADDR="10.0.0.5", HTTP_X_FORWARDED_FOR=OUTSIDER)

    assert forged.status_code == HTTPStatus.FORBIDDEN
    assert scraper.status_code == HTTPStatus.OK


def test_configured_networks_may_scrape(client, settings):
    settings.METRICS_ALLOWED_NETWORKS = ["198.51.100.0/24", "203.0.113.0/28", "2001:db8::/32"]

    assert client.get(reverse("metrics"), REMOTE_ADDR=OUTSIDER).status_code == HTTPStatus.OK
    assert client.get(reverse("metrics"), REMOTE_ADDR="2001:db8::1").status_code == HTTPStatus.OK
    assert client.get(reverse("metrics"), REMOTE_ADDR="203.0.113.99").status_code == HTTPStatus.FORBIDDEN


def test_the_configured_token_lets_anyone_scrape(client, settings):
    settings.METRICS_TOKEN = "s3cret-scrape-token"

    allowed = client.get(
        reverse("metrics"), REMOTE_ADDR=OUTSIDER, HTTP_AUTHORIZATION="Bearer s3cret-scrape-token"
    )
    wrong = client.get(
        reverse("metrics"), REMOTE_ADDR=OUTSIDER, HTTP_AUTHORIZATION="Bearer s3cret-scrape-tokem"
    )
    other_scheme = client.get(
        reverse("metrics"), REMOTE_ADDR=OUTSIDER, HTTP_AUTHORIZATION="Basic s3cret-scrape-token"
    )

    assert allowed.status_code == HTTPStatus.OK
    assert b"django_http_requests_total" in allowed.content
    assert wrong.status_code == HTTPStatus.FORBIDDEN
    assert other_scheme.status_code == HTTPStatus.FORBIDDEN


def test_no_token_configured_means_no_token_works(client, settings):
    settings.METRICS_TOKEN = ""

    response = client.get(reverse("metrics"), REMOTE_ADDR=OUTSIDER, HTTP_AUTHORIZATION="Bearer ")

    assert response.status_code == HTTPStatus.FORBIDDEN


def test_loopback_can_be_switched_off(client, settings):
    settings.METRICS_ALLOW_LOOPBACK = False

    assert client.get(reverse("metrics")).status_code == HTTPStatus.FORBIDDEN


def test_only_safe_methods(client):
    assert client.post(reverse("metrics")).status_code == HTTPStatus.METHOD_NOT_ALLOWED
