"""``manage.py delete_user``: the operators' way to delete a user now that there is no admin site.

Marked ``transaction=True``: no outer row-level-security scope (see conftest), so on PostgreSQL
these prove the command scopes itself; one that forgot would stop at the foreign key.
"""

import uuid
from io import StringIO

import pytest
from django.core.management import call_command, load_command_class
from django.core.management.base import CommandError

from accounts.models import User
from conversations import services
from conversations.models import Conversation, IdempotencyKey, Message
from conversations.tests.factories import ConversationFactory, MessageFactory, UserFactory
from core.rls import all_users

pytestmark = pytest.mark.django_db(transaction=True)


def delete_user(*args, stdin="", **options):
    out = StringIO()
    call_command("delete_user", *args, stdout=out, stdin=StringIO(stdin), **options)
    return out.getvalue()


@pytest.fixture
def doomed():
    """A user with two conversations, three messages (one appended with an idempotency key)."""
    user = UserFactory.create(username="doomed")
    first = ConversationFactory.create(user=user)
    MessageFactory.create_batch(2, conversation=first)
    second = services.conversation_create(user=user, title="second")
    services.message_append_idempotent(
        user=user, conversation_id=second.pk, role="user", content="hi", idempotency_key="key-1"
    )
    return user


@pytest.fixture
def survivor():
    message = MessageFactory.create()
    return message.user


def rows_of(user):
    with all_users(reason="test assertions"):
        return (
            Conversation.objects.filter(user=user).count(),
            Message.objects.filter(user=user).count(),
            IdempotencyKey.objects.filter(user=user).count(),
        )


def test_deletes_the_user_and_all_of_their_data_and_nothing_else(doomed, survivor):
    output = delete_user("doomed", interactive=False)

    assert output == f"Deleted user 'doomed' ({doomed.pk}) with 2 conversations and 3 messages.\n"
    assert not User.objects.filter(pk=doomed.pk).exists()
    assert rows_of(doomed) == (0, 0, 0)
    assert rows_of(survivor) == (1, 1, 0)


def test_finds_the_user_by_id_too(doomed):
    delete_user(str(doomed.pk), interactive=False)

    assert not User.objects.filter(pk=doomed.pk).exists()


def test_dry_run_counts_and_deletes_nothing(doomed):
    output = delete_user("doomed", dry_run=True)

    assert output == (
        f"Dry run: would delete user 'doomed' ({doomed.pk}) with 2 conversations and 3 messages. "
        "Nothing was deleted.\n"
    )
    assert User.objects.filter(pk=doomed.pk).exists()
    assert rows_of(doomed) == (2, 3, 1)


def test_asks_and_deletes_only_after_yes(doomed):
    output = delete_user("doomed", stdin="yes\n")

    assert output.startswith(f"This deletes user 'doomed' ({doomed.pk}) with 2 conversations and 3 messages")
    assert output.endswith(f"Deleted user 'doomed' ({doomed.pk}) with 2 conversations and 3 messages.\n")
    assert not User.objects.filter(pk=doomed.pk).exists()


@pytest.mark.parametrize("answer", ["", "no\n", "y\n"])
def test_anything_but_yes_cancels(doomed, answer):
    output = delete_user("doomed", stdin=answer)

    assert output.endswith("Cancelled: nothing was deleted.\n")
    assert rows_of(doomed) == (2, 3, 1)


@pytest.mark.parametrize("name", ["nobody", str(uuid.uuid4()), "DOOMED"])
def test_an_unknown_user_is_an_error_and_deletes_nothing(doomed, name):
    with pytest.raises(CommandError, match="No user"):
        delete_user(name, interactive=False)

    assert User.objects.filter(pk=doomed.pk).exists()


def test_documents_its_options():
    command = load_command_class("conversations", "delete_user")

    text = command.create_parser("manage.py", "delete_user").format_help()

    for option in ["USER", "--dry-run", "--no-input"]:
        assert option in text
