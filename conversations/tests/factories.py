"""factory_boy factories. Messages go through the append service so that ``seq``,
``message_count`` and ``updated_at`` are what the application would have made."""

from typing import Any

from factory.base import Factory
from factory.declarations import Sequence, SubFactory
from factory.django import DjangoModelFactory, Password
from factory.faker import Faker

from accounts.models import User
from conversations.models import Conversation, Message, Role
from conversations.services import message_append
from core.rls import user_scope

TEST_PASSWORD = "correct-horse-battery-staple"


class UserFactory(DjangoModelFactory[User]):
    class Meta:
        model = User
        skip_postgeneration_save = True

    username = Sequence(lambda n: f"user{n}")
    password = Password(TEST_PASSWORD)


class ConversationFactory(DjangoModelFactory[Conversation]):
    class Meta:
        model = Conversation

    user = SubFactory(UserFactory)
    title = Faker("sentence", nb_words=4)

    @classmethod
    def _create(cls, model_class: type[Conversation], *args: Any, **kwargs: Any) -> Conversation:
        with user_scope(kwargs["user"]):
            return super()._create(model_class, *args, **kwargs)


class MessageFactory(Factory[Message]):
    class Meta:
        model = Message

    conversation = SubFactory(ConversationFactory)
    role = Role.USER
    content = Faker("paragraph")
    tool_calls = None

    @classmethod
    def _create(
        cls, model_class: type[Message], *args: Any, conversation: Conversation, **kwargs: Any
    ) -> Message:
        return message_append(user=conversation.user, conversation_id=conversation.pk, **kwargs)
