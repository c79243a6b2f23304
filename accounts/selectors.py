"""Reads about users."""

from accounts.models import User
from accounts.services import UserData


def user_data_count(*, user: User) -> UserData:
    """How many conversations and messages ``user`` has: two counts, no rows."""
    from conversations.models import Conversation, Message
    from conversations.rls import user_scope

    with user_scope(user, atomic=True):
        return UserData(
            conversations=Conversation.objects.filter(user=user).count(),
            messages=Message.objects.filter(user=user).count(),
        )
