import uuid

from django.contrib.auth.models import AbstractUser
from django.db import models


class User(AbstractUser):
    """A user whose primary key is a UUID, so ``user_id`` is a UUID everywhere in the API.

    Users of an external identity provider get their id from the provider's token, which is
    why the key is not time-ordered: it is often chosen elsewhere.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Set only when an external identity provider's token creates the account; that
    # provider's tokens reach no other account (``may_use_external_tokens``).
    is_external = models.BooleanField(
        default=False,
        editable=False,
        help_text="Created for a token of the external identity provider.",
    )

    @property
    def may_use_external_tokens(self) -> bool:
        """Whether an external token may sign in as this user: one the external issuer created
        that has not since become a local account (a password, staff or superuser status)."""
        return self.is_external and not (self.is_staff or self.is_superuser or self.has_usable_password())
