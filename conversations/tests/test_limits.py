"""Bounded everything: each limit of the README's "Limits" table, at its value and one past it,
and hostile input that must be a 4xx, never a 500 (NUL bytes, which PostgreSQL refuses in
text; nesting deeper than Python's recursion limit; integers too long to convert; overflowing
timestamps; huge cursors). Every refusal names the field or parameter it is about and stores
nothing."""

import json
from http import HTTPStatus

import pytest
from django.conf import settings as django_settings
from django.urls import reverse

from accounts.models import User
from conversations.models import Conversation, IdempotencyKey, Message

from .factories import ConversationFactory, MessageFactory
from .test_api_messages import TOOL_CALL
from .test_pagination import bulk_messages

pytestmark = pytest.mark.django_db

ASTRAL = "\U0001f600"  # one code point, two UTF-16 units, four UTF-8 bytes
# Deeper than Python's recursion limit (json raises RecursionError past about 1,000 levels),
# and 200 KB: well within API_MAX_BODY_BYTES, so it reaches the parser.
DEEP = 100_000


@pytest.fixture
def conversation(user):
    return ConversationFactory.create(user=user)


def post_json(client, url, body, **headers):
    text = body if isinstance(body, str) else json.dumps(body)
    return client.post(url, text, content_type="application/json", **headers)


def patch_json(client, url, body):
    text = body if isinstance(body, str) else json.dumps(body)
    return client.patch(url, text, content_type="application/json")


def assert_400_naming(response, name):
    assert response.status_code == HTTPStatus.BAD_REQUEST, response.content[:300]
    assert name in response.json(), response.json()


def stored_rows():
    return (Conversation.objects.count(), Message.objects.count(), IdempotencyKey.objects.count())


def tool_call(**function):
    return {**TOOL_CALL, "function": {"name": "get_weather", "arguments": "{}", **function}}


def assistant_with(tool_calls):
    return {"role": "assistant", "content": None, "tool_calls": tool_calls}


# Field lengths: the value is accepted, one more is a 400 naming the field -----------------

# name: (field named in the 400, limit, body with a value of n code points)
FIELD_LIMITS = {
    "content": ("content", 10_000, lambda n, c: {"role": "user", "content": c * n}),
    "tool_calls items": ("tool_calls", 64, lambda n, c: assistant_with([TOOL_CALL] * n)),
    "tool call id": ("tool_calls", 255, lambda n, c: assistant_with([{**TOOL_CALL, "id": c * n}])),
    "tool call name": ("tool_calls", 255, lambda n, c: assistant_with([tool_call(name=c * n)])),
    "tool call arguments": ("tool_calls", 65_536, lambda n, c: assistant_with([tool_call(arguments=c * n)])),
}


@pytest.mark.parametrize("character", ["x", ASTRAL])
@pytest.mark.parametrize("case", FIELD_LIMITS)
def test_message_field_at_its_limit_is_accepted_and_one_more_is_a_400_naming_it(
    auth_client, conversation, case, character
):
    field, limit, body = FIELD_LIMITS[case]
    url = reverse("conversation-message-list", args=[conversation.pk])

    assert post_json(auth_client, url, body(limit, character)).status_code == HTTPStatus.CREATED
    assert_400_naming(post_json(auth_client, url, body(limit + 1, character)), field)
    assert Message.objects.count() == 1


@pytest.mark.parametrize("character", ["x", ASTRAL])
def test_title_of_200_code_points_is_accepted_and_201_is_a_400_on_create_and_rename(
    auth_client, conversation, character
):
    create, rename = reverse("conversation-list"), reverse("conversation-detail", args=[conversation.pk])

    assert post_json(auth_client, create, {"title": character * 200}).status_code == HTTPStatus.CREATED
    assert patch_json(auth_client, rename, {"title": character * 200}).status_code == HTTPStatus.OK
    assert_400_naming(post_json(auth_client, create, {"title": character * 201}), "title")
    assert_400_naming(patch_json(auth_client, rename, {"title": character * 201}), "title")
    assert Conversation.objects.count() == 2


def test_register_username_of_151_characters_and_password_of_4097_are_400s_naming_them(api_client):
    url = reverse("auth-register")

    assert_400_naming(
        post_json(api_client, url, {"username": "u" * 151, "password": "pw-9a7Xq!"}), "username"
    )
    assert_400_naming(post_json(api_client, url, {"username": "fine", "password": "p" * 4097}), "password")
    assert not User.objects.exists()


# Request body size -------------------------------------------------------------------------


def body_endpoints(conversation_id):
    """Every operation that reads a body: (method, url)."""
    return [
        ("post", reverse("conversation-list")),
        ("patch", reverse("conversation-detail", args=[conversation_id])),
        ("post", reverse("conversation-message-list", args=[conversation_id])),
        ("post", reverse("auth-register")),
        ("post", reverse("auth-token")),
        ("post", reverse("auth-token-refresh")),
    ]


def json_of_exactly(size):
    """A JSON object of exactly ``size`` bytes whose one string is far over every field limit."""
    overhead = len(json.dumps({"content": ""}))
    return json.dumps({"content": "x" * (size - overhead)})


def test_body_one_byte_over_api_max_body_bytes_is_a_413_on_every_operation_that_reads_one(
    auth_client, conversation
):
    limit = django_settings.API_MAX_BODY_BYTES
    body = json_of_exactly(limit + 1)
    before = stored_rows()

    for method, url in body_endpoints(conversation.pk):
        response = getattr(auth_client, method)(url, body, content_type="application/json")
        assert response.status_code == HTTPStatus.REQUEST_ENTITY_TOO_LARGE, (method, url)
        assert str(limit) in response.json()["detail"]

    assert stored_rows() == before


def test_body_of_exactly_api_max_body_bytes_is_read_and_validated(auth_client, conversation):
    body = json_of_exactly(django_settings.API_MAX_BODY_BYTES).replace(
        '"content"', '"role":"user","content"', 1
    )
    body = body[: -len('x"}') - len('"role":"user",')] + 'x"}'  # back to the exact size
    assert len(body.encode()) == django_settings.API_MAX_BODY_BYTES

    response = post_json(auth_client, reverse("conversation-message-list", args=[conversation.pk]), body)

    assert_400_naming(response, "content")


# Nesting, numbers and other JSON the parser must survive ---------------------------------


def deeply_nested(levels):
    return "[" * levels + "]" * levels


HOSTILE_JSON = {
    "array nested 100,000 deep": deeply_nested(DEEP),
    "object nested 50,000 deep": '{"a":' * 50_000 + "1" + "}" * 50_000,
    "tool_calls nested 100,000 deep": '{"role":"assistant","content":null,"tool_calls":'
    + deeply_nested(DEEP)
    + "}",
    "integer of 5,000 digits": '{"role":"user","content":"hi","title":' + "9" * 5_000 + "}",
    "NaN": '{"role":"user","content":"hi","title":NaN}',
    "Infinity": '{"role":"user","content":"hi","title":-Infinity}',
    "truncated": '{"role":"user","content":"hi',
    "invalid UTF-8": b'{"role":"user","content":"\xff\xfe"}',
}


@pytest.mark.parametrize("case", HOSTILE_JSON)
def test_hostile_json_is_a_400_on_every_operation_that_reads_a_body(auth_client, conversation, case):
    before = stored_rows()

    for method, url in body_endpoints(conversation.pk):
        response = getattr(auth_client, method)(url, HOSTILE_JSON[case], content_type="application/json")
        assert response.status_code == HTTPStatus.BAD_REQUEST, (method, url, response.content[:200])
        assert "detail" in response.json()

    assert stored_rows() == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        # Within Python's recursion limit, parsed; refused by the serializer.
        ('{"role":"assistant","content":null,"tool_calls":' + deeply_nested(500) + "}", "tool_calls"),
        ('{"role":"user","content":' + "7" * 4_000 + "}", "content"),
        ('{"role":"user","content":1e999}', "content"),
        ('{"role":' + "1" * 4_000 + ',"content":"hi"}', "role"),
    ],
    ids=["tool_calls nested 500 deep", "content a 4,000-digit integer", "content 1e999", "role an integer"],
)
def test_parsable_but_wrong_json_is_a_400_naming_the_field(auth_client, conversation, body, field):
    response = post_json(auth_client, reverse("conversation-message-list", args=[conversation.pk]), body)

    assert_400_naming(response, field)
    assert not Message.objects.exists()


def test_huge_numbers_in_unknown_fields_are_ignored_and_keyed_for_idempotency(auth_client, conversation):
    url = reverse("conversation-message-list", args=[conversation.pk])
    body = '{"role":"user","content":"hi","extra":' + "7" * 4_000 + ',"more":1e999}'

    first = post_json(auth_client, url, body, HTTP_IDEMPOTENCY_KEY="huge-numbers")
    again = post_json(auth_client, url, body, HTTP_IDEMPOTENCY_KEY="huge-numbers")

    assert (first.status_code, again.status_code) == (HTTPStatus.CREATED, HTTPStatus.CREATED)
    assert again["Idempotent-Replayed"] == "true"
    assert Message.objects.count() == 1


# NUL bytes: PostgreSQL refuses them in text, so each must be a 400 before any query --------


def test_nul_in_content_title_and_tool_calls_is_a_400_naming_the_field(auth_client, conversation):
    messages = reverse("conversation-message-list", args=[conversation.pk])
    cases = [
        (post_json(auth_client, messages, {"role": "user", "content": "a\x00b"}), "content"),
        (post_json(auth_client, messages, assistant_with([{**TOOL_CALL, "id": "a\x00"}])), "tool_calls"),
        (post_json(auth_client, messages, assistant_with([tool_call(name="\x00")])), "tool_calls"),
        (
            post_json(auth_client, messages, assistant_with([tool_call(arguments='{"a":"\x00"}')])),
            "tool_calls",
        ),
        (post_json(auth_client, reverse("conversation-list"), {"title": "a\x00b"}), "title"),
        (
            patch_json(
                auth_client, reverse("conversation-detail", args=[conversation.pk]), {"title": "\x00"}
            ),
            "title",
        ),
    ]
    for response, field in cases:
        assert_400_naming(response, field)
    assert stored_rows() == (1, 0, 0)


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("auth-register", {"username": "a\x00b", "password": "pw-9a7Xq!-long"}, "username"),
        ("auth-register", {"username": "nul-password", "password": "pw-9a7Xq!\x00"}, "password"),
        ("auth-token", {"username": "a\x00b", "password": "whatever"}, "username"),
        ("auth-token", {"username": "someone", "password": "what\x00ever"}, "password"),
    ],
)
def test_nul_in_credentials_is_a_400_naming_the_field(api_client, user, path, body, field):
    assert_400_naming(post_json(api_client, reverse(path), body), field)
    assert User.objects.count() == 1


def test_nul_in_a_refresh_token_is_refused_as_a_bad_token(api_client):
    response = post_json(api_client, reverse("auth-token-refresh"), {"refresh": "a.b\x00.c"})

    assert response.status_code in {HTTPStatus.BAD_REQUEST, HTTPStatus.UNAUTHORIZED}
    assert response.json()


def test_nul_in_the_authorization_header_is_a_401(api_client):
    response = api_client.get(reverse("auth-me"), HTTP_AUTHORIZATION="Bearer a.b\x00.c")

    assert response.status_code == HTTPStatus.UNAUTHORIZED


def test_nul_in_a_path_id_is_the_usual_404(auth_client, conversation):
    for url in (
        "/api/v1/conversations/%00/",
        f"/api/v1/conversations/{conversation.pk}/messages/%00/",
        "/api/v1/conversations/%00/history/",
    ):
        response = auth_client.get(url)
        assert response.status_code == HTTPStatus.NOT_FOUND, url
        assert response.json() == {"detail": "Not found."}


# Idempotency-Key ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key", ["", "k" * 256, "a\x00b", "\x00"], ids=["empty", "256 characters", "NUL inside", "only NUL"]
)
def test_idempotency_key_outside_1_to_255_characters_or_with_nul_is_a_400(auth_client, conversation, key):
    url = reverse("conversation-message-list", args=[conversation.pk])

    response = post_json(auth_client, url, {"role": "user", "content": "hi"}, HTTP_IDEMPOTENCY_KEY=key)

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert "detail" in response.json()
    assert stored_rows() == (1, 0, 0)


def test_idempotency_key_of_255_non_ascii_characters_is_accepted(auth_client, conversation):
    url = reverse("conversation-message-list", args=[conversation.pk])
    # Header values reach Django as ISO-8859-1 text.
    key = "é" * 255

    response = post_json(auth_client, url, {"role": "user", "content": "hi"}, HTTP_IDEMPOTENCY_KEY=key)

    assert response.status_code == HTTPStatus.CREATED
    assert IdempotencyKey.objects.get().key == key


# Query parameters: page_size, limit, ordering, role, cursor, time filters ------------------

NOT_A_POSITIVE_INTEGER = ["0", "-1", "abc", "1.5", "", "1e3", "0x10", " 5", "\u0661", "%00", "5%00"]


def list_urls(conversation_id):
    return {
        "conversations": reverse("conversation-list"),
        "messages": reverse("conversation-message-list", args=[conversation_id]),
    }


@pytest.mark.parametrize("value", NOT_A_POSITIVE_INTEGER)
def test_page_size_that_is_not_a_positive_integer_is_a_400_naming_it(auth_client, conversation, value):
    for url in list_urls(conversation.pk).values():
        assert_400_naming(auth_client.get(f"{url}?page_size={value}"), "page_size")


@pytest.mark.parametrize("value", NOT_A_POSITIVE_INTEGER)
def test_history_limit_that_is_not_a_positive_integer_is_a_400_naming_it(auth_client, conversation, value):
    url = reverse("conversation-history", args=[conversation.pk])
    assert_400_naming(auth_client.get(f"{url}?limit={value}"), "limit")


@pytest.mark.parametrize("value", ["10000", "9" * 40, "9" * 5_000])
def test_page_size_and_limit_above_the_maximum_are_clamped(auth_client, user, conversation, value):
    bulk_messages(conversation, 501)
    Conversation.objects.bulk_create(Conversation(user=user) for _ in range(100))
    urls = list_urls(conversation.pk)

    conversations = auth_client.get(f"{urls['conversations']}?page_size={value}")
    messages = auth_client.get(f"{urls['messages']}?page_size={value}")
    history = auth_client.get(f"{reverse('conversation-history', args=[conversation.pk])}?limit={value}")

    assert len(conversations.json()["results"]) == 100
    assert len(messages.json()["results"]) == 200
    assert len(history.json()["messages"]) == 500


@pytest.mark.parametrize("name", ["ordering", "role"])
@pytest.mark.parametrize("value", ["seq", "%00", "created_at%00", "x" * 10_000])
def test_ordering_and_role_outside_their_choices_are_a_400_naming_them(
    auth_client, conversation, name, value
):
    urls = list_urls(conversation.pk)
    targets = [urls["messages"]] if name == "role" else urls.values()
    for url in targets:
        assert_400_naming(auth_client.get(f"{url}?{name}={value}"), name)


@pytest.mark.parametrize(
    "cursor",
    ["A" * 100_000, "%00" * 1_000, "x:" * 50_000],
    ids=["100 KB", "NUL bytes", "100 KB of separators"],
)
def test_a_cursor_of_100_kb_or_with_nul_bytes_is_a_400_naming_it(auth_client, conversation, cursor):
    MessageFactory.create(conversation=conversation)
    for url in list_urls(conversation.pk).values():
        assert_400_naming(auth_client.get(f"{url}?cursor={cursor}"), "cursor")


TIME_FILTERS = {
    "conversations": ["created_after", "created_before", "updated_after", "updated_before"],
    "messages": ["created_after", "created_before"],
}
BAD_TIMESTAMPS = {
    "garbage": "soon",
    "year 1 at +05:00 (before year 1 in UTC)": "0001-01-01T00:00:00%2B05:00",
    "year 9999 at -05:00 (after year 9999 in UTC)": "9999-12-31T23:00:00-05:00",
    "year 99999": "99999-01-01T00:00:00Z",
    "month 13": "2026-13-01T00:00:00Z",
    "offset of 99 hours": "2026-01-01T00:00:00%2B99:00",
    "NUL": "2026-01-01T00:00:00Z%00",
    "5,000 digits": "9" * 5_000,
}


@pytest.mark.parametrize("case", BAD_TIMESTAMPS)
def test_time_filters_refuse_garbage_and_overflowing_timestamps_with_a_400_naming_them(
    auth_client, conversation, case
):
    urls = list_urls(conversation.pk)
    for kind, names in TIME_FILTERS.items():
        for name in names:
            assert_400_naming(auth_client.get(f"{urls[kind]}?{name}={BAD_TIMESTAMPS[case]}"), name)


@pytest.mark.parametrize(
    "value", ["0001-01-01T00:00:00Z", "0001-01-01T00:00:00-05:00", "9999-12-31T23:59:59.999999Z"]
)
def test_time_filters_accept_the_extremes_that_fit_in_utc(auth_client, conversation, value):
    MessageFactory.create(conversation=conversation)
    urls = list_urls(conversation.pk)
    for kind, names in TIME_FILTERS.items():
        for name in names:
            response = auth_client.get(f"{urls[kind]}?{name}={value.replace('+', '%2B')}")
            assert response.status_code == HTTPStatus.OK, (kind, name, response.content[:200])
