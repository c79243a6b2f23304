"""Search (``GET /api/v1/search/`` and ``search=`` on the conversation list), on both
databases: matching, ranking, snippets, pages, bad queries, and another user's data, present
and matching in every test, never found."""

import re
import uuid
from http import HTTPStatus
from typing import Any

import pytest
from django.db import connection
from django.urls import reverse

from accounts.services import user_delete
from conftest import client_for
from conversations import services
from conversations.models import Conversation
from conversations.search import SNIPPET_MAX_LENGTH
from core import rls

from .factories import ConversationFactory, UserFactory

pytestmark = pytest.mark.django_db

SEARCH = reverse("search-list")
CONVERSATIONS = reverse("conversation-list")


def say(user, conversation: Conversation, *contents: str, role: str = "user") -> list[Any]:
    return [
        services.message_append(user=user, conversation_id=conversation.pk, role=role, content=content)
        for content in contents
    ]


def chat(user, title: str, *contents: str) -> Conversation:
    conversation = ConversationFactory.create(user=user, title=title)
    say(user, conversation, *contents)
    return conversation


@pytest.fixture
def both(user, other_user):
    """Writes the same conversations for the caller and for another user: whatever the
    caller could find, the other user has too."""

    def write(title: str, *contents: str) -> Conversation:
        chat(other_user, title, *contents)
        return chat(user, title, *contents)

    return write


def hits(client, q: str, **params: Any) -> list[dict[str, Any]]:
    response = client.get(SEARCH, {"q": q, **params})
    assert response.status_code == HTTPStatus.OK, response.content
    return response.json()["results"]


def hit_texts(client, q: str) -> list[str]:
    """The snippets of the hits, marks taken out: the matching texts."""
    return [re.sub("</?mark>", "", hit["snippet"]) for hit in hits(client, q)]


def assert_only_own(results: list[dict[str, Any]], user) -> None:
    own = set(map(str, Conversation.objects.filter(user=user).values_list("pk", flat=True)))
    assert {hit.get("conversation_id", hit.get("id")) for hit in results} <= own


# -- matching -------------------------------------------------------------------------------------


def test_words_all_must_match_with_stemming(auth_client, user, both):
    both("", "She runs the kettle every morning", "running late again", "the kettle is broken")

    assert sorted(hit_texts(auth_client, "running kettle")) == ["She runs the kettle every morning"]
    assert sorted(hit_texts(auth_client, "run")) == [
        "She runs the kettle every morning",
        "running late again",
    ]
    assert_only_own(hits(auth_client, "kettle"), user)


def test_quoted_phrases_match_words_in_that_order(auth_client, user, both):
    both("", "the connection pool is full", "pool connection reset", "a connection to the pool")

    assert hit_texts(auth_client, '"connection pool"') == ["the connection pool is full"]
    assert len(hits(auth_client, "connection pool")) == 3


def test_excluded_words_leave_out_what_holds_them(auth_client, user, both):
    both("", "the pool timed out", "the pool is warm", "a timeout elsewhere")

    assert hit_texts(auth_client, "pool -timing") == ["the pool is warm"]
    assert hit_texts(auth_client, 'pool -"is warm"') == ["the pool timed out"]


def test_or_between_alternatives(auth_client, user, both):
    both("", "a kettle of fish", "a teapot of tea", "a mug of coffee")

    assert sorted(hit_texts(auth_client, "kettle OR teapot")) == ["a kettle of fish", "a teapot of tea"]
    # OR binds tighter than the words around it, as in websearch_to_tsquery: (a b) OR c.
    assert sorted(hit_texts(auth_client, "kettle fish or coffee")) == ["a kettle of fish", "a mug of coffee"]


def test_titles_match_with_null_message_id_and_role(auth_client, user, both):
    conversation = both("Trip to Lisbon", "nothing about it here")

    (hit,) = hits(auth_client, "lisbon")

    assert hit == {
        "conversation_id": str(conversation.pk),
        "conversation_title": "Trip to Lisbon",
        "message_id": None,
        "role": None,
        "created_at": hit["created_at"],
        "snippet": "Trip to <mark>Lisbon</mark>",
    }


def test_a_message_hit_names_its_message_role_time_and_conversation(auth_client, user, both):
    conversation = both("Weather", "is it raining in Paris")
    (message,) = say(user, conversation, "Paris is sunny today", role="assistant")

    (hit,) = hits(auth_client, "sunny")

    assert hit["message_id"] == str(message.pk)
    assert hit["role"] == "assistant"
    assert hit["conversation_id"] == str(conversation.pk)
    assert hit["conversation_title"] == "Weather"
    assert hit["created_at"] == message.created_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_what_changes_is_found_as_it_now_reads(auth_client, user, other_user, both):
    conversation = both("Old name", "first words", "second words")
    services.conversation_update(user=user, conversation_id=conversation.pk, title="Brand new")
    services.message_pop(user=user, conversation_id=conversation.pk)

    assert hits(auth_client, "old") == []
    assert [hit["message_id"] for hit in hits(auth_client, "brand")] == [None]
    assert hit_texts(auth_client, "words") == ["first words"]

    services.conversation_clear(user=user, conversation_id=conversation.pk)
    assert hits(auth_client, "words") == []

    services.conversation_delete(user=user, conversation_id=conversation.pk)
    assert hits(auth_client, "brand") == []
    # The other user's copy is there all along, and still is.
    assert len(hits(client_for(other_user), "words")) == 2


def test_deleting_a_user_leaves_nothing_of_theirs_in_the_index(auth_client, user, other_user, both):
    both("Kettle", "kettle kettle")
    other_id = other_user.pk

    user_delete(user=other_user)

    assert len(hits(auth_client, "kettle")) == 2
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM conversations_searchtext WHERE user_id = %s", [other_id.hex])
            assert cursor.fetchone()[0] == 0
            cursor.execute(
                "SELECT count(*) FROM conversations_search WHERE conversations_search MATCH 'kettle'"
            )
            assert cursor.fetchone()[0] == 2


def test_stop_words_alone_find_nothing_on_postgresql_and_never_fail(auth_client, user, both):
    both("", "the and of")

    response = auth_client.get(SEARCH, {"q": "the"})

    assert response.status_code == HTTPStatus.OK
    if connection.vendor == "postgresql":
        assert response.json()["results"] == []


# -- ranking --------------------------------------------------------------------------------------


def test_a_message_with_more_matches_ranks_first(auth_client, user, both):
    both(
        "",
        "one kettle here",
        "kettle kettle kettle: the kettle whistles, the kettle boils",
        "kettle and another kettle",
    )

    assert hit_texts(auth_client, "kettle")[0].startswith("kettle kettle kettle")
    assert hit_texts(auth_client, "kettle")[-1] == "one kettle here"


# -- snippets -------------------------------------------------------------------------------------


def test_snippets_are_escaped_with_marks_around_the_matches(auth_client, user, both):
    both("", "<script>alert('kettle')</script> & Tom's \"kettle\" <mark>not a match</mark>")

    (hit,) = hits(auth_client, "kettle")

    snippet = hit["snippet"]
    assert "<script>" not in snippet
    assert "&lt;script&gt;" in snippet
    assert " &amp; " in snippet
    assert "&lt;mark&gt;not a match&lt;/mark&gt;" in snippet
    assert snippet.count("<mark>") == snippet.count("</mark>") == 2
    assert re.findall("<mark>(.*?)</mark>", snippet) == ["kettle", "kettle"]


def test_content_cannot_forge_the_match_markers(auth_client, user, both):
    both("", "\x02boiling\x03 water in the kettle")

    (hit,) = hits(auth_client, "kettle")

    assert re.findall("<mark>(.*?)</mark>", hit["snippet"]) == ["kettle"]
    assert "boiling" in hit["snippet"]


@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_snippets_of_long_texts_are_at_most_300_characters_around_the_match(auth_client, user, both, where):
    filler = "lorem & ipsum <dolor> sit amet " * 300  # 9,300 characters, much of it escaped
    text = {
        "start": f"kettle {filler}",
        "middle": f"{filler} kettle {filler}"[:9990],
        "end": f"{filler} kettle",
    }
    both("", text[where])

    (hit,) = hits(auth_client, "kettle")

    assert len(hit["snippet"]) <= SNIPPET_MAX_LENGTH
    assert "<mark>kettle</mark>" in hit["snippet"]
    assert not re.search(r"&[a-z]*$", hit["snippet"])  # never cut inside an escape


def test_snippet_budget_counts_the_escapes_and_the_marks():
    from conversations.search import START, STOP, render_snippet

    marked = "&" * 200 + f"{START}kettle{STOP} " + "<" * 200

    snippet = render_snippet(marked)

    assert len(snippet) <= SNIPPET_MAX_LENGTH
    assert "<mark>kettle</mark>" in snippet
    assert snippet.startswith("…&amp;")
    assert snippet.endswith("&lt;")


# -- pages ----------------------------------------------------------------------------------------


def walk(
    client, first_url: str, params: dict[str, Any], direction: str = "next"
) -> list[list[dict[str, Any]]]:
    pages = []
    response = client.get(first_url, params)
    while True:
        assert response.status_code == HTTPStatus.OK, response.content
        body = response.json()
        pages.append(body["results"])
        if body[direction] is None:
            return pages
        response = client.get(body[direction])


def test_walking_every_page_returns_every_hit_once_best_first(auth_client, user, both):
    # Ranks that tie (the same texts) and ranks that differ, over several conversations.
    for n in range(5):
        both(f"kettle list {n}", *[("kettle " * (1 + i % 3)) + f"number {i}" for i in range(9)])
    expected = 5 * 10  # 9 messages and one title each

    pages = walk(auth_client, SEARCH, {"q": "kettle", "page_size": 7})

    seen = [hit["message_id"] or hit["conversation_id"] for page in pages for hit in page]
    assert len(seen) == len(set(seen)) == expected
    assert [len(page) for page in pages] == [7] * 7 + [1]
    assert_only_own([hit for page in pages for hit in page], user)
    # Best first across the pages: whole snippets with three kettles before those with one.
    counts = [hit["snippet"].count("<mark>") for page in pages for hit in page if hit["message_id"]]
    assert counts == sorted(counts, reverse=True)

    back = walk(auth_client, SEARCH, {"q": "kettle", "page_size": 7})[-1]
    assert back == pages[-1]


def test_walking_back_with_previous_returns_the_same_pages(auth_client, user, both):
    for n in range(3):
        both("", *[f"kettle {'kettle ' * (i % 2)}{n} {i}" for i in range(8)])
    forward = walk(auth_client, SEARCH, {"q": "kettle", "page_size": 5})
    last = auth_client.get(SEARCH, {"q": "kettle", "page_size": 5})
    for _ in range(len(forward) - 1):
        last = auth_client.get(last.json()["next"])

    backward = [last.json()["results"]]
    response = last
    while response.json()["previous"]:
        response = auth_client.get(response.json()["previous"])
        backward.append(response.json()["results"])

    assert backward[::-1] == forward


def test_page_size_defaults_to_20_and_clamps_to_50(auth_client, user, both):
    both("", *[f"kettle {i}" for i in range(60)])

    assert len(hits(auth_client, "kettle")) == 20
    assert len(hits(auth_client, "kettle", page_size=1000)) == 50
    response = auth_client.get(SEARCH, {"q": "kettle", "page_size": 0})
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert "page_size" in response.json()


# -- bad queries ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "q",
    [None, "", " ", "\t\n ", "x" * 201, "-kettle", "kettle OR -fish", "!!! ???", "a\x00b", '""', "OR"],
    ids=[
        "missing",
        "empty",
        "blank",
        "whitespace",
        "201 characters",
        "only excluded",
        "an alternative only excluded",
        "no words",
        "NUL",
        "empty phrase",
        "only OR",
    ],
)
def test_bad_searches_are_a_400_naming_the_parameter(auth_client, user, both, q):
    both("", "kettle")
    params = {} if q is None else {"q": q}

    response = auth_client.get(SEARCH, params)

    assert response.status_code == HTTPStatus.BAD_REQUEST, response.content
    assert list(response.json()) == ["q"]

    if q is not None:
        listed = auth_client.get(CONVERSATIONS, {"search": q})
        assert listed.status_code == HTTPStatus.BAD_REQUEST, listed.content
        assert list(listed.json()) == ["search"]


def test_200_characters_is_accepted(auth_client, user, both):
    both("", "kettle")

    assert len(hits(auth_client, "kettle " + "x" * 193)) == 0
    assert len(hits(auth_client, "kettle".ljust(200))) == 1


@pytest.mark.parametrize(
    "q",
    [
        'kettle" OR "x',
        "kettle NEAR(a b)",
        "kettle AND",
        "NOT kettle",
        "kettle*",
        "^kettle",
        "body:kettle",
        "owner:kettle",
        "{body owner}: kettle",
        "kettle)))",
        "((kettle",
        '"kettle',
        "kettle -",
        "kettle - - -",
        "kettle \"'",
        "kettle ; DROP TABLE conversations_message; --",
        "kettle \\ ' \" ` %s %(x)s ?",
        "ketтle 水壶 kettle",
    ],
)
def test_query_syntax_of_the_engines_is_only_text(auth_client, user, both, q):
    """FTS5 and tsquery operators in the text are words, never syntax: no 500, and only the
    caller's rows."""
    both("Kettle", "kettle near a b")

    response = auth_client.get(SEARCH, {"q": q})

    assert response.status_code in {HTTPStatus.OK, HTTPStatus.BAD_REQUEST}, response.content
    if response.status_code == HTTPStatus.OK:
        assert_only_own(response.json()["results"], user)
    listed = auth_client.get(CONVERSATIONS, {"search": q})
    assert listed.status_code in {HTTPStatus.OK, HTTPStatus.BAD_REQUEST}, listed.content


# -- other users ----------------------------------------------------------------------------------


def test_another_users_messages_and_titles_never_match(auth_client, user, other_user):
    chat(other_user, "Secret kettle plans", "my secret kettle recipe")
    chat(user, "Mine", "nothing to see")

    assert hits(auth_client, "kettle") == []
    assert hits(auth_client, "secret") == []
    assert auth_client.get(CONVERSATIONS, {"search": "kettle"}).json()["results"] == []
    assert len(hits(client_for(other_user), "kettle")) == 2


def test_a_staff_superuser_finds_only_their_own(other_user):
    chat(other_user, "Secret kettle plans", "my secret kettle recipe")
    boss = UserFactory.create(is_staff=True, is_superuser=True)

    assert hits(client_for(boss), "kettle") == []


# -- the conversation list's search= ---------------------------------------------------------


def test_list_search_narrows_to_conversations_whose_title_or_a_message_matches(auth_client, user, both):
    by_title = both("Kettle shopping", "which one to buy")
    by_message = both("Breakfast", "the kettle is slow", "toast")
    both("Unrelated", "nothing here")

    response = auth_client.get(CONVERSATIONS, {"search": "kettle"})

    assert response.status_code == HTTPStatus.OK
    # The list's own order: most recently updated first.
    assert [c["id"] for c in response.json()["results"]] == [str(by_message.pk), str(by_title.pk)]
    assert_only_own(response.json()["results"], user)


def test_list_search_keeps_the_lists_ordering_pages_and_filters(auth_client, user, both):
    conversations = [both(f"Kettle {n}", "kettle") for n in range(7)]
    both("Unrelated", "nothing here")

    pages = walk(auth_client, CONVERSATIONS, {"search": "kettle", "page_size": 3, "ordering": "created_at"})

    assert [c["id"] for page in pages for c in page] == [str(c.pk) for c in conversations]
    created_after = conversations[4].created_at.isoformat()
    later = auth_client.get(CONVERSATIONS, {"search": "kettle", "created_after": created_after}).json()
    assert {c["id"] for c in later["results"]} == {str(conversations[5].pk), str(conversations[6].pk)}


def test_list_search_with_a_conversation_matching_in_many_messages_lists_it_once(auth_client, user, both):
    conversation = both("Kettle", *["kettle"] * 30)

    response = auth_client.get(CONVERSATIONS, {"search": "kettle"})

    assert [c["id"] for c in response.json()["results"]] == [str(conversation.pk)]


# -- the Python API ---------------------------------------------------------------------------


def test_search_hits_of_the_python_api_are_the_users_own(user, other_user, both):
    from conversations.search import parse, search_hits

    both("Kettle", "kettle")

    with rls.user_scope(other_user):  # whatever scope is in force, the user's own rows
        found = search_hits(user=user, query=parse("kettle"), limit=10)

    assert len(found) == 2
    assert {hit.conversation_id for hit in found} <= set(
        Conversation.objects.filter(user=user).values_list("pk", flat=True)
    )
    assert all(isinstance(hit.hit_id, uuid.UUID) for hit in found)
