"""Issue 14's conversation fields: ``archived``, ``pinned``, ``metadata`` and ``preview``, the
list's filters, and the list's ETag, which any change to any of the user's conversations
makes stale."""

import json
from collections.abc import Callable
from datetime import timedelta
from http import HTTPStatus
from typing import Any

import pytest
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from accounts.services import user_delete
from conversations import portability, retention, services
from conversations.models import Conversation, ConversationListVersion
from core.rls import all_users, user_scope

from .factories import ConversationFactory, MessageFactory
from .test_api_conversations import detail_url, list_url
from .test_api_messages import message_url, messages_url

pytestmark = pytest.mark.django_db

TOOL_CALL = {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}


def patch(client, conversation_id, body: Any):
    return client.patch(detail_url(conversation_id), json.dumps(body), content_type="application/json")


def preview_of(client, conversation_id) -> Any:
    return client.get(detail_url(conversation_id)).json()["preview"]


def append(client, conversation_id, body: Any) -> Any:
    response = client.post(messages_url(conversation_id), json.dumps(body), content_type="application/json")
    assert response.status_code == HTTPStatus.CREATED, response.content
    return response.json()


# -- preview ----------------------------------------------------------------------------------


def test_preview_is_the_newest_messages_role_content_and_time(auth_client, user):
    conversation = ConversationFactory.create(user=user)
    assert preview_of(auth_client, conversation.pk) is None

    first = append(auth_client, conversation.pk, {"role": "user", "content": "Weather in Paris?"})
    assert preview_of(auth_client, conversation.pk) == {
        "role": "user",
        "content": "Weather in Paris?",
        "created_at": first["created_at"],
    }
    turn = append(
        auth_client,
        conversation.pk,
        [
            {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]},
            {"role": "assistant", "content": "It is 18 °C and sunny in Paris"},
        ],
    )
    assert preview_of(auth_client, conversation.pk) == {
        "role": "assistant",
        "content": "It is 18 °C and sunny in Paris",
        "created_at": turn[-1]["created_at"],
    }


def test_preview_content_is_cut_at_200_code_points_and_null_stays_null(auth_client, user):
    conversation = ConversationFactory.create(user=user)
    text = "🙂é" * 150  # 300 code points, most of them more than one byte
    append(auth_client, conversation.pk, {"role": "user", "content": text})
    assert preview_of(auth_client, conversation.pk)["content"] == text[:200]

    append(auth_client, conversation.pk, {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]})
    assert preview_of(auth_client, conversation.pk)["content"] is None


def test_undo_makes_the_message_before_the_preview_and_clear_takes_it_away(auth_client, user):
    conversation = ConversationFactory.create(user=user)
    first = append(auth_client, conversation.pk, {"role": "user", "content": "first"})
    second = append(auth_client, conversation.pk, {"role": "assistant", "content": "second"})

    assert auth_client.delete(message_url(conversation.pk, second["id"])).status_code == HTTPStatus.NO_CONTENT
    assert preview_of(auth_client, conversation.pk) == {
        "role": "user",
        "content": "first",
        "created_at": first["created_at"],
    }

    assert auth_client.delete(messages_url(conversation.pk)).status_code == HTTPStatus.NO_CONTENT
    assert preview_of(auth_client, conversation.pk) is None


def test_tool_results_and_call_changes_leave_the_preview_as_it_was(user):
    conversation = ConversationFactory.create(user=user)
    message = services.message_append(
        user=user,
        conversation_id=conversation.pk,
        role="assistant",
        content="Looking",
        tool_calls=[TOOL_CALL],
    )
    before = Conversation.objects.get(pk=conversation.pk).preview
    services.tool_results_record(
        user=user,
        conversation_id=conversation.pk,
        message_id=message.pk,
        tool_results=[{"tool_call_id": "call_1", "content": "18 °C"}],
    )
    assert Conversation.objects.get(pk=conversation.pk).preview == before
    assert before == {"role": "assistant", "content": "Looking", "created_at": message.created_at}


def test_the_list_shows_each_rows_preview_with_no_query_per_row(auth_client, user, assert_data_queries):
    for n in range(30):
        MessageFactory.create(conversation=ConversationFactory.create(user=user), content=f"message {n}")
    # The token's user and the page: the previews come with the rows.
    with assert_data_queries(2):
        response = auth_client.get(list_url(page_size=100))
    results = response.json()["results"]
    assert len(results) == 30
    assert {row["preview"]["content"] for row in results} == {f"message {n}" for n in range(30)}


def test_an_imported_conversation_has_its_last_messages_preview(user, other_user):
    conversation = ConversationFactory.create(user=user)
    MessageFactory.create(conversation=conversation, content="x" * 300)
    lines: list[str] = []
    with user_scope(user):
        portability.conversations_export(user=user, out=_Lines(lines), output_format="jsonl")
    report = portability.conversations_import(user=other_user, lines=_reowned(lines))
    assert report.conversations_imported == 1
    with user_scope(other_user):
        imported = Conversation.objects.get(user=other_user)
    assert imported.preview == {"role": "user", "content": "x" * 200, "created_at": imported.updated_at}


class _Lines:
    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    def write(self, text: str) -> None:
        self.lines.append(text)


def _reowned(chunks: list[str]) -> list[str]:
    """The export with new ids, so that another user can import it."""
    records = [json.loads(line) for line in "".join(chunks).splitlines() if line]
    new_id = "01a2055f-25b0-700c-a19f-b33874f635aa"
    for n, record in enumerate(records):
        if record["type"] == "conversation":
            record["id"] = new_id
        else:
            record["conversation_id"] = new_id
            record["id"] = f"01a2055f-25b0-700c-a19f-b33874f63{n:03d}"
    return [json.dumps(record) for record in records]


# -- the database's own checks ------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"metadata": ["not", "an", "object"]},
        {"metadata": "text"},
        {"preview_role": "user", "preview_content": "x" * 201, "preview_created_at": timezone.now()},
        {"preview_role": "system", "preview_content": "x", "preview_created_at": timezone.now()},
        {"preview_role": "user", "preview_content": "x", "preview_created_at": None},
        {"preview_role": None, "preview_content": "x"},
    ],
    ids=["metadata array", "metadata string", "preview too long", "preview role", "no time", "no role"],
)
def test_the_database_refuses_what_the_model_promises_not_to_hold(user, change):
    conversation = MessageFactory.create(conversation=ConversationFactory.create(user=user)).conversation
    with pytest.raises(IntegrityError), transaction.atomic():
        Conversation.objects.filter(pk=conversation.pk).update(**change)


def test_the_database_refuses_a_preview_on_an_empty_conversation(user):
    conversation = ConversationFactory.create(user=user)
    with pytest.raises(IntegrityError), transaction.atomic():
        Conversation.objects.filter(pk=conversation.pk).update(
            preview_role="user", preview_content="x", preview_created_at=timezone.now()
        )


# -- PATCH: flags and metadata -------------------------------------------------------------------


def test_flags_and_metadata_change_without_moving_updated_at(auth_client, user):
    conversation = ConversationFactory.create(user=user)
    before = auth_client.get(detail_url(conversation.pk))

    response = patch(auth_client, conversation.pk, {"archived": True, "pinned": True, "metadata": {"a": "1"}})

    assert response.status_code == HTTPStatus.OK
    body = response.json()
    assert (body["archived"], body["pinned"], body["metadata"]) == (True, True, {"a": "1"})
    assert body["updated_at"] == before.json()["updated_at"]
    assert body["title"] == before.json()["title"]
    # The conversation's own ETag went stale all the same.
    again = auth_client.get(detail_url(conversation.pk), headers={"If-None-Match": before["ETag"]})
    assert again.status_code == HTTPStatus.OK


def test_a_new_title_moves_updated_at_and_leaves_the_flags(auth_client, user):
    conversation = ConversationFactory.create(user=user, updated_at=timezone.now() - timedelta(days=1))
    patch(auth_client, conversation.pk, {"pinned": True})

    body = patch(auth_client, conversation.pk, {"title": "Renamed"}).json()

    assert body["title"] == "Renamed"
    assert body["pinned"] is True
    assert body["updated_at"] > conversation.updated_at.isoformat().replace("+00:00", "Z")


def test_metadata_is_set_on_create_and_replaced_whole(auth_client):
    created = auth_client.post(
        list_url(),
        json.dumps({"title": "t", "metadata": {"a": "1", "b": "2"}}),
        content_type="application/json",
    )
    assert created.status_code == HTTPStatus.CREATED
    assert created.json()["metadata"] == {"a": "1", "b": "2"}

    body = patch(auth_client, created.json()["id"], {"metadata": {"c": "3"}}).json()
    assert body["metadata"] == {"c": "3"}
    assert patch(auth_client, created.json()["id"], {"metadata": {}}).json()["metadata"] == {}


@pytest.mark.parametrize(
    "metadata",
    [
        ["a"],
        "a",
        None,
        {f"k{n}": "v" for n in range(17)},
        {"": "v"},
        {"k" * 65: "v"},
        {"k": "v" * 513},
        {"k": 1},
        {"k": None},
        {"k": {"nested": "v"}},
        {"k": "nul\x00"},
        {"nul\x00": "v"},
    ],
    ids=[
        "array",
        "string",
        "null",
        "17 keys",
        "empty key",
        "key of 65",
        "value of 513",
        "number",
        "null value",
        "object value",
        "NUL in a value",
        "NUL in a key",
    ],
)
@pytest.mark.parametrize("how", ["create", "patch"])
def test_malformed_metadata_is_a_400_naming_metadata_and_changes_nothing(auth_client, user, metadata, how):
    conversation = ConversationFactory.create(user=user, metadata={"kept": "yes"})
    if how == "create":
        response = auth_client.post(
            list_url(), json.dumps({"metadata": metadata}), content_type="application/json"
        )
    else:
        response = patch(auth_client, conversation.pk, {"metadata": metadata, "pinned": True})
    assert response.status_code == HTTPStatus.BAD_REQUEST, response.content
    assert set(response.json()) == {"metadata"}
    assert list(Conversation.objects.filter(user=user).values_list("metadata", "pinned")) == [
        ({"kept": "yes"}, False)
    ]


def test_metadata_at_its_limits_is_accepted(auth_client, user):
    conversation = ConversationFactory.create(user=user)
    metadata = {f"{n:02d}" + "k" * 62: "v" * 512 for n in range(16)}
    response = patch(auth_client, conversation.pk, {"metadata": metadata})
    assert response.status_code == HTTPStatus.OK
    assert response.json()["metadata"] == metadata


@pytest.mark.parametrize("value", ["true", 1, None, "yes"])
def test_a_flag_that_is_not_a_json_boolean_is_a_400_naming_it(auth_client, user, value):
    conversation = ConversationFactory.create(user=user)
    response = patch(auth_client, conversation.pk, {"archived": value})
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert set(response.json()) == {"archived"}


def test_another_users_flags_and_metadata_are_a_404_and_change_nothing(auth_client, other_user):
    theirs = ConversationFactory.create(user=other_user)
    response = patch(auth_client, theirs.pk, {"archived": True, "pinned": True, "metadata": {"a": "b"}})
    assert response.status_code == HTTPStatus.NOT_FOUND
    assert response.json() == {"detail": "Not found."}
    theirs_now = Conversation.objects.get(pk=theirs.pk)
    assert (theirs_now.archived, theirs_now.pinned, theirs_now.metadata, theirs_now.version) == (
        False,
        False,
        {},
        theirs.version,
    )


# -- list filters -------------------------------------------------------------------------------


@pytest.fixture
def flagged(user, other_user):
    """One conversation of each combination of the flags, and another user's of each."""
    made = {}
    for owner in (user, other_user):
        for archived in (False, True):
            for pinned in (False, True):
                conversation = ConversationFactory.create(user=owner, archived=archived, pinned=pinned)
                if owner == user:
                    made[archived, pinned] = str(conversation.pk)
    return made


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({}, [(False, False), (False, True)]),
        ({"archived": "false"}, [(False, False), (False, True)]),
        ({"archived": "true"}, [(True, False), (True, True)]),
        ({"pinned": "true"}, [(False, True)]),
        ({"pinned": "false"}, [(False, False)]),
        ({"archived": "true", "pinned": "true"}, [(True, True)]),
        ({"archived": "true", "pinned": "false"}, [(True, False)]),
    ],
)
@pytest.mark.parametrize("ordering", ["-updated_at", "updated_at", "-created_at", "created_at"])
def test_list_filters_archived_by_default_and_pinned_on_request(
    auth_client, flagged, query, expected, ordering
):
    response = auth_client.get(list_url(**query, ordering=ordering))
    assert response.status_code == HTTPStatus.OK
    assert sorted(row["id"] for row in response.json()["results"]) == sorted(flagged[key] for key in expected)


@pytest.mark.parametrize("value", ["", "True", "1", "yes", "maybe", "null"])
@pytest.mark.parametrize("name", ["archived", "pinned"])
def test_a_bad_flag_filter_is_a_400_naming_it(auth_client, name, value):
    response = auth_client.get(list_url(**{name: value}))
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert name in response.json()


def test_an_archived_conversation_is_still_found_by_its_id(auth_client, user):
    conversation = ConversationFactory.create(user=user, archived=True)
    assert auth_client.get(detail_url(conversation.pk)).status_code == HTTPStatus.OK


# -- the list's ETag ----------------------------------------------------------------------------


def list_etag(client, url: str | None = None) -> str:
    response = client.get(url or list_url())
    assert response.status_code == HTTPStatus.OK
    return response["ETag"]


def revalidate(client, etag: str, url: str | None = None) -> int:
    return client.get(url or list_url(), headers={"If-None-Match": etag}).status_code


def test_an_unchanged_list_is_a_304_after_one_row_by_key(auth_client, user, assert_data_queries):
    MessageFactory.create(conversation=ConversationFactory.create(user=user))
    etag = list_etag(auth_client)

    # The token's user and the list version: no page is read.
    with assert_data_queries(2) as queries:
        response = auth_client.get(list_url(), headers={"If-None-Match": etag})

    assert response.status_code == HTTPStatus.NOT_MODIFIED
    assert response["ETag"] == etag
    assert response.content == b""
    assert "conversations_conversationlistversion" in queries[-1]
    assert 'conversations_conversation"' not in queries[-1].replace(
        "conversations_conversationlistversion", ""
    )


def test_the_list_page_reads_its_version_in_its_own_statement(auth_client, user, assert_data_queries):
    ConversationFactory.create(user=user)
    with assert_data_queries(2):
        response = auth_client.get(list_url())
    assert response["ETag"]


def test_each_page_and_filter_has_its_own_etag(auth_client, user):
    for _ in range(3):
        ConversationFactory.create(user=user)
    first = auth_client.get(list_url(page_size=2))
    second_url = first.json()["next"]
    tags = {
        first["ETag"],
        list_etag(auth_client, second_url),
        list_etag(auth_client, list_url(archived="true")),
        list_etag(auth_client, list_url(pinned="true")),
        list_etag(auth_client),
    }
    assert len(tags) == 5
    assert revalidate(auth_client, first["ETag"], list_url(page_size=3)) == HTTPStatus.OK


def test_an_empty_list_has_an_etag_that_a_new_conversation_makes_stale(auth_client, user):
    etag = list_etag(auth_client)
    assert revalidate(auth_client, etag) == HTTPStatus.NOT_MODIFIED
    services.conversation_create(user=user)
    assert revalidate(auth_client, etag) == HTTPStatus.OK


def _newest(user, conversation) -> Any:
    with user_scope(user):
        return conversation.messages.order_by("-seq").first()


# Each change, made to the user's conversation ``c`` (which has two messages, the newest an
# assistant's with a call and no result) or to their list.
CHANGES: dict[str, Callable[[Any, Any], Any]] = {
    "create": lambda u, c: services.conversation_create(user=u, title="new"),
    "delete": lambda u, c: services.conversation_delete(user=u, conversation_id=c.pk),
    "append": lambda u, c: services.message_append(user=u, conversation_id=c.pk, role="user", content="more"),
    "batch": lambda u, c: services.messages_append(
        user=u,
        conversation_id=c.pk,
        messages=[
            services.NewMessage(role="user", content="a"),
            services.NewMessage(role="assistant", content="b"),
        ],
    ),
    "tool results": lambda u, c: services.tool_results_record(
        user=u,
        conversation_id=c.pk,
        message_id=_newest(u, c).pk,
        tool_results=[{"tool_call_id": "call_1", "content": "18 °C"}],
    ),
    "pop": lambda u, c: services.message_pop(user=u, conversation_id=c.pk),
    "clear": lambda u, c: services.conversation_clear(user=u, conversation_id=c.pk),
    "rename": lambda u, c: services.conversation_update(user=u, conversation_id=c.pk, title="renamed"),
    "archive": lambda u, c: services.conversation_update(user=u, conversation_id=c.pk, archived=True),
    "pin": lambda u, c: services.conversation_update(user=u, conversation_id=c.pk, pinned=True),
    "metadata": lambda u, c: services.conversation_update(user=u, conversation_id=c.pk, metadata={"k": "v"}),
    "the same metadata again": lambda u, c: services.conversation_update(
        user=u, conversation_id=c.pk, metadata={}
    ),
    "create then delete": lambda u, c: services.conversation_delete(
        user=u, conversation_id=services.conversation_create(user=u).pk
    ),
    "append then pop": lambda u, c: (
        services.message_append(user=u, conversation_id=c.pk, role="user", content="x"),
        services.message_pop(user=u, conversation_id=c.pk),
    ),
    "retention's prune": lambda u, c: retention.conversations_prune(
        cutoff=timezone.now() + timedelta(days=1)
    ),
}


@pytest.fixture
def busy(user):
    conversation = ConversationFactory.create(user=user)
    MessageFactory.create(conversation=conversation)
    services.message_append(
        user=user, conversation_id=conversation.pk, role="assistant", content=None, tool_calls=[TOOL_CALL]
    )
    ConversationFactory.create(user=user)
    return conversation


@pytest.mark.parametrize("change", CHANGES)
@pytest.mark.parametrize("page", ["first page", "a filtered page"])
def test_every_change_to_any_conversation_makes_every_earlier_list_etag_stale(
    auth_client, user, other_user, busy, change, page
):
    """Even when what the list shows comes back to where it was (a create then a delete, an
    append then its undo), and whatever page or filter the tag was taken of."""
    url = list_url() if page == "first page" else list_url(pinned="false", ordering="created_at")
    etag = list_etag(auth_client, url)
    other = ConversationFactory.create(user=other_user)
    services.message_append(user=other_user, conversation_id=other.pk, role="user", content="theirs")
    assert revalidate(auth_client, etag, url) == HTTPStatus.NOT_MODIFIED, "another user's change is not ours"

    CHANGES[change](user, busy)

    assert revalidate(auth_client, etag, url) == HTTPStatus.OK
    assert revalidate(auth_client, list_etag(auth_client, url), url) == HTTPStatus.NOT_MODIFIED


def test_a_users_deletion_takes_their_list_version_with_them(user, busy, other_user):
    ConversationFactory.create(user=other_user)
    user_delete(user=user)
    with all_users(reason="the test looks for what is left"):
        assert list(ConversationListVersion.objects.values_list("user_id", flat=True)) == [other_user.pk]


def test_a_delete_of_several_users_conversations_moves_each_users_version(user, other_user):
    mine, theirs = ConversationFactory.create(user=user), ConversationFactory.create(user=other_user)

    def versions() -> dict[Any, int]:
        return dict(ConversationListVersion.objects.values_list("user_id", "version"))

    before = versions()
    with all_users(reason="one statement across users, as retention's", atomic=True):
        Conversation.objects.filter(pk__in=[mine.pk, theirs.pk]).delete()
    after = versions()
    assert after[user.pk] > before[user.pk]
    assert after[other_user.pk] > before[other_user.pk]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="roles are PostgreSQL's")
def test_the_serving_role_keeps_its_users_list_version_and_sees_no_other(user, other_user):
    mine = ConversationFactory.create(user=user)
    ConversationFactory.create(user=other_user)
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(f"SET LOCAL ROLE {connection.ops.quote_name(settings.DATABASE_SERVING_ROLE)}")
        with user_scope(user):
            before = ConversationListVersion.objects.get().version
            services.message_append(user=user, conversation_id=mine.pk, role="user", content="as the server")
            services.conversation_delete(user=user, conversation_id=mine.pk)
            # Row-level security: only the user's own version row is there.
            assert list(ConversationListVersion.objects.values_list("user_id", "version")) == [
                (user.pk, before + 2)
            ]
        with connection.cursor() as cursor:
            cursor.execute("RESET ROLE")
