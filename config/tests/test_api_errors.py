"""Every error under /api/ is JSON: unknown paths, 400, 405, 413, 415, 429, 500 and 503."""

import io
import json
import logging

import pytest
from django.test import RequestFactory
from django.urls import reverse
from rest_framework import status
from rest_framework.exceptions import NotFound
from rest_framework.throttling import SimpleRateThrottle

from config.tests.views import SECRET, FailInMiddleware
from core import errors

pytestmark = [pytest.mark.django_db, pytest.mark.urls("config.tests.urls")]

NOT_FOUND_BODY = json.dumps({"detail": str(NotFound.default_detail)}, separators=(",", ":")).encode()


def assert_json_error(response, status_code):
    assert response.status_code == status_code, response.content
    assert response["Content-Type"] == "application/json"
    body = json.loads(response.content)
    assert isinstance(body.get("detail"), str)
    assert SECRET not in response.content.decode()
    assert "Traceback" not in response.content.decode()
    return body


# Unknown paths


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
@pytest.mark.parametrize("debug", [False, True])
def test_unknown_api_path_is_drf_not_found_json_for_every_method(client, settings, method, debug):
    settings.DEBUG = debug
    response = client.generic(method, "/api/v1/no-such-thing/", data="{}", content_type="application/json")

    assert_json_error(response, status.HTTP_404_NOT_FOUND)
    assert response.content == NOT_FOUND_BODY


def test_unknown_api_path_without_trailing_slash_is_json_404(client):
    response = client.get("/api/v1/conversations-typo")

    assert_json_error(response, status.HTTP_404_NOT_FOUND)


def test_http404_from_a_view_has_the_same_body_as_an_unknown_path(client):
    """Django's message ("No Conversation matches…") would tell a missing object apart."""
    from_drf_view = client.get(reverse("test-missing"))
    from_plain_view = client.get(reverse("test-plain-missing"))

    assert from_drf_view.status_code == from_plain_view.status_code == status.HTTP_404_NOT_FOUND
    assert from_drf_view.content == from_plain_view.content == NOT_FOUND_BODY


def test_unknown_path_outside_api_keeps_djangos_404(client):
    response = client.get("/no-such-page/")

    assert response.status_code == status.HTTP_404_NOT_FOUND
    assert response["Content-Type"].startswith("text/html")


# 400, 405, 415


def test_malformed_json_is_400_json(client):
    response = client.post(reverse("test-echo"), data='{"title": ', content_type="application/json")

    body = assert_json_error(response, status.HTTP_400_BAD_REQUEST)
    assert body["detail"].startswith("JSON parse error")


def test_well_formed_json_is_accepted(client):
    response = client.post(reverse("test-echo"), data={"title": "hi"}, content_type="application/json")

    assert response.status_code == status.HTTP_200_OK
    assert response.json() == {"received": {"title": "hi"}}


@pytest.mark.parametrize(
    ("content_type", "data"),
    [
        ("text/plain", "hello"),
        ("application/x-www-form-urlencoded", "title=hi"),
        ("application/xml", "<title>hi</title>"),
    ],
)
def test_wrong_content_type_is_415_json(client, content_type, data):
    response = client.post(reverse("test-echo"), data=data, content_type=content_type)

    body = assert_json_error(response, status.HTTP_415_UNSUPPORTED_MEDIA_TYPE)
    assert content_type in body["detail"]


def test_multipart_form_is_415_json(client):
    response = client.post(reverse("test-echo"), data={"title": "hi"})  # the test client's default

    assert_json_error(response, status.HTTP_415_UNSUPPORTED_MEDIA_TYPE)


@pytest.mark.parametrize("method", ["put", "patch", "delete"])
def test_method_not_allowed_is_405_json(client, method):
    response = getattr(client, method)(reverse("test-echo"), data="{}", content_type="application/json")

    body = assert_json_error(response, status.HTTP_405_METHOD_NOT_ALLOWED)
    assert method.upper() in body["detail"]
    assert "GET" in response["Allow"]


# 413


@pytest.fixture
def small_body_limit(settings):
    settings.API_MAX_BODY_BYTES = 1000
    return 1000


def json_body(size):
    """A JSON document of exactly ``size`` bytes."""
    body = json.dumps({"content": "x" * (size - len('{"content": ""}'))}).encode()
    assert len(body) == size
    return body


@pytest.mark.parametrize("path", ["/api/v1/auth/register/", "/api/v1/conversations/", "/api/test/echo/"])
def test_body_over_the_limit_is_413_json(client, small_body_limit, path):
    response = client.post(path, data=json_body(1001), content_type="application/json")

    body = assert_json_error(response, status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    assert "1000 bytes" in body["detail"]


def test_body_at_the_limit_is_accepted(client, small_body_limit):
    response = client.post(reverse("test-echo"), data=json_body(1000), content_type="application/json")

    assert response.status_code == status.HTTP_200_OK


def test_declared_length_over_the_limit_is_413_before_the_body_is_read(client, small_body_limit):
    unread = io.BytesIO(b"{}")
    response = client.post(
        reverse("test-echo"),
        data=b"{}",
        content_type="application/json",
        CONTENT_LENGTH="5000000",
        **{"wsgi.input": unread},
    )

    assert_json_error(response, status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    assert unread.tell() == 0


def test_limit_is_read_at_request_time(client, settings):
    def post_20_bytes():
        return client.post(reverse("test-echo"), data=json_body(20), content_type="application/json")

    settings.API_MAX_BODY_BYTES = 10
    assert post_20_bytes().status_code == status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    settings.API_MAX_BODY_BYTES = 100
    assert post_20_bytes().status_code == status.HTTP_200_OK


def chunked_post(client, path, body):
    """A POST as gunicorn hands a chunked one to Django: no Content-Length, a terminated input."""
    return client.generic(
        "POST",
        path,
        data=body,
        content_type="application/json",
        CONTENT_LENGTH="",
        HTTP_TRANSFER_ENCODING="chunked",
        **{"wsgi.input": io.BytesIO(body), "wsgi.input_terminated": True},
    )


def test_chunked_body_over_the_limit_is_413_json(client, small_body_limit):
    response = chunked_post(client, reverse("test-echo"), json_body(1001))

    assert_json_error(response, status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)


def test_chunked_body_within_the_limit_is_parsed(client, small_body_limit):
    response = chunked_post(client, reverse("test-echo"), b'{"title": "chunked"}')

    assert response.status_code == status.HTTP_200_OK
    assert response.json() == {"received": {"title": "chunked"}}


@pytest.mark.parametrize("name", ["test-raw-body", "test-plain-raw-body"])
def test_djangos_own_body_limit_in_a_view_is_413_json(client, settings, name):
    """A view that reads request.body meets Django's RequestDataTooBig, not this middleware."""
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10
    response = client.post(reverse(name), data=json_body(20), content_type="application/json")

    assert_json_error(response, status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)


# 500


@pytest.mark.parametrize("name", ["test-fails", "test-plain-fails"])
@pytest.mark.parametrize("debug", [False, True])
def test_unhandled_exception_is_json_500_without_traceback(client, settings, caplog, name, debug):
    settings.DEBUG = debug
    client.raise_request_exception = False

    response = client.get(reverse(name))

    assert assert_json_error(response, status.HTTP_500_INTERNAL_SERVER_ERROR) == {
        "detail": "Internal server error."
    }
    logged = [r for r in caplog.records if r.name == "core.middleware" and r.levelno == logging.ERROR]
    assert len(logged) == 1
    assert logged[0].exc_info[0] is RuntimeError


def test_unhandled_exception_reaches_djangos_error_reporting(client):
    """got_request_exception is sent, as for the errors Django answers itself: the test
    client re-raises the exception, as error reporters would see it."""
    with pytest.raises(RuntimeError, match=SECRET):
        client.get(reverse("test-fails"))


def test_exception_in_middleware_is_json_500_through_handler500(client, settings):
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, "config.tests.views.FailInMiddleware"]
    client.raise_request_exception = False

    response = client.get(FailInMiddleware.PATH)

    assert assert_json_error(response, status.HTTP_500_INTERNAL_SERVER_ERROR) == {
        "detail": "Internal server error."
    }


@pytest.mark.parametrize(
    ("handler", "status_code"),
    [
        (errors.bad_request, status.HTTP_400_BAD_REQUEST),
        (errors.permission_denied, status.HTTP_403_FORBIDDEN),
        (errors.page_not_found, status.HTTP_404_NOT_FOUND),
    ],
)
def test_django_error_handlers_answer_json_under_api_only(handler, status_code):
    api = handler(RequestFactory().get("/api/v1/x/"), Exception())
    page = handler(RequestFactory().get("/static/x/"), Exception())

    assert_json_error(api, status_code)
    assert page.status_code == status_code
    assert page["Content-Type"].startswith("text/html")


def test_server_error_handler_answers_json_under_api_only():
    assert_json_error(errors.server_error(RequestFactory().get("/api/v1/x/")), 500)
    assert errors.server_error(RequestFactory().get("/static/x/"))["Content-Type"].startswith("text/html")


# 503


@pytest.mark.parametrize("debug", [False, True])
def test_database_error_in_a_view_is_503_with_retry_after(client, settings, debug):
    settings.DEBUG = debug
    response = client.get(reverse("test-database-error"))

    assert_json_error(response, status.HTTP_503_SERVICE_UNAVAILABLE)
    assert int(response["Retry-After"]) > 0


@pytest.mark.parametrize("name", ["test-unreachable-database", "test-plain-unreachable-database"])
def test_unreachable_database_is_503_with_retry_after(client, unreachable_database, name):
    """A real failure: the view queries a database server that is not there."""
    response = client.get(reverse(name))

    body = assert_json_error(response, status.HTTP_503_SERVICE_UNAVAILABLE)
    assert body == {"detail": "The database is unavailable. Try again shortly."}
    assert response["Retry-After"] == str(errors.DATABASE_RETRY_AFTER_SECONDS)


# 429


@pytest.fixture
def anon_rate_two_per_minute(settings, monkeypatch):
    rates = {"anon": "2/minute", "user": "1000/minute"}
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}
    # DRF's throttles copy the rates when rest_framework.throttling is first imported, so the
    # setting above does not reach them; this does.
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", rates)


def test_third_anonymous_request_in_a_minute_is_429_with_retry_after(client, anon_rate_two_per_minute):
    answers = [client.get(reverse("test-echo")) for _ in range(3)]

    assert [r.status_code for r in answers[:2]] == [status.HTTP_200_OK, status.HTTP_200_OK]
    body = assert_json_error(answers[2], status.HTTP_429_TOO_MANY_REQUESTS)
    assert "throttled" in body["detail"]
    assert 0 < int(answers[2]["Retry-After"]) <= 60


def test_throttle_without_a_known_wait_still_sends_retry_after():
    from rest_framework.exceptions import Throttled

    response = errors.api_error_response(Throttled(wait=None))

    assert response.status_code == status.HTTP_429_TOO_MANY_REQUESTS
    assert response["Retry-After"] == "1"
