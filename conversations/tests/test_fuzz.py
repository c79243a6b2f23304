"""Schemathesis against our own OpenAPI schema, in process, on the real test database.

Every operation of ``/api/schema/`` is called with generated path, query, header and body
values (the schema's examples, its boundary and negative cases, then up to ``MAX_EXAMPLES``
random ones), with a valid access token of a user who has a conversation with messages.
Each answer must not be a 5xx and, where its status is documented, must match the schema.
A second pass pins the path ids to that user's real conversation and message, so that the
generated queries and bodies reach the code behind the lookup instead of the 404.

The WSGI handler runs in the test's thread, so its requests share the test's connection and
transaction (rolled back after each operation's test) on SQLite and PostgreSQL alike.
Generation is derandomized: the same cases every run.
"""

from typing import Any

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from rest_framework.throttling import SimpleRateThrottle
from rest_framework_simplejwt.tokens import AccessToken
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from conversations import services
from conversations.models import Conversation, Message

from .factories import ConversationFactory, MessageFactory, UserFactory
from .test_api_messages import TOOL_CALL

pytestmark = pytest.mark.django_db

MAX_EXAMPLES = 25

schema = schemathesis.openapi.from_wsgi("/api/schema/", WSGIHandler())
schema.config.generation.update(max_examples=MAX_EXAMPLES, deterministic=True)

# Every answer: no 5xx, and a documented status's body matches its schema.
CHECKS = [not_a_server_error, response_schema_conformance]


class FuzzWorld:
    """A user with a conversation of messages, and the token that acts as them."""

    def __init__(self) -> None:
        self.user = UserFactory.create()
        self.token = str(AccessToken.for_user(self.user))
        self.conversation = self._conversation()

    def _conversation(self) -> Conversation:
        conversation = ConversationFactory.create(user=self.user)
        self._fill(conversation)
        return conversation

    def _fill(self, conversation: Conversation) -> None:
        """Messages whose history has every kind of item: text, a call with its result, and
        newest, a call still waiting for its result (which the tool-results cases record)."""
        MessageFactory.create_batch(2, conversation=conversation)
        for tool_results in ([{"tool_call_id": TOOL_CALL["id"], "content": "4 °C"}], None):
            services.message_append(
                user=self.user,
                conversation_id=conversation.pk,
                role="assistant",
                content=None,
                tool_calls=[TOOL_CALL],
                tool_results=tool_results,
            )

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def existing_ids(self) -> tuple[str, str]:
        """The conversation's id and its newest message's id, made again if a generated
        DELETE took them away (the conversation, or its messages by an undo or a clear)."""
        if not Conversation.objects.filter(pk=self.conversation.pk).exists():
            self.conversation = self._conversation()
        newest = Message.objects.filter(conversation=self.conversation).order_by("seq").last()
        if newest is None:
            self._fill(self.conversation)
            newest = Message.objects.filter(conversation=self.conversation).order_by("seq").last()
        assert newest is not None
        return str(self.conversation.pk), str(newest.pk)


@pytest.fixture
def world(monkeypatch):
    """The fuzzed user, with throttles off (hundreds of requests in a few seconds) and
    Django's per-request connection closing off, as Django's test client does: the WSGI
    handler's request_finished would otherwise close the test's connection mid-transaction."""
    unthrottled = dict.fromkeys(SimpleRateThrottle.THROTTLE_RATES)  # every scope, the export's too
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", unthrottled)
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield FuzzWorld()
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


def pin_to_existing_objects(case: Any, world: FuzzWorld) -> None:
    """Replace generated path ids with the world's real conversation and message ids."""
    conversation_id, message_id = world.existing_ids()
    parameters = dict(case.path_parameters or {})
    if "conversation_pk" in parameters:
        parameters["conversation_pk"] = conversation_id
        if "id" in parameters:
            parameters["id"] = message_id
    elif "id" in parameters:
        parameters["id"] = conversation_id
    case.path_parameters = parameters


@schema.parametrize()
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_no_operation_answers_5xx_or_breaks_its_schema(case, world):
    case.call_and_validate(headers=world.headers, checks=CHECKS)


@schema.parametrize()
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_no_operation_on_existing_objects_answers_5xx_or_breaks_its_schema(case, world):
    pin_to_existing_objects(case, world)
    case.call_and_validate(headers=world.headers, checks=CHECKS)


@schema.parametrize()
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_every_answer_has_a_status_code_the_schema_documents(case, world):
    case.call_and_validate(headers=world.headers, checks=[status_code_conformance])
