import uuid
from typing import Any

from django.contrib.auth.models import AbstractUser
from django.db import models
from django.db.models.functions import Lower

from core import replicas

# The unique index of usernames folded to lower case: registration checks against the same
# expression (accounts.services.username_taken), so this index serves that lookup too.
USERNAME_LOWER_UNIQUE = "accounts_user_username_lower_unique"
USERNAME_TAKEN = "A user with that username already exists."


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

    def save(self, *args: Any, **kwargs: Any) -> None:
        super().save(*args, **kwargs)
        # The user's write, however it is made (an operator's changepassword too): their token
        # lookups go to a replica only once it has the change, so a replaced password's
        # tokens stop there as on the primary (core/replicas.py).
        replicas.written(self.pk)

    @property
    def may_use_external_tokens(self) -> bool:
        """Whether an external token may sign in as this user: one the external issuer created
        that has not since become a local account (a password, staff or superuser status)."""
        return self.is_external and not (self.is_staff or self.is_superuser or self.has_usable_password())

    class Meta(AbstractUser.Meta):  # type: ignore[name-defined,misc]  # the stubs lack it
        # Usernames are unique regardless of case; logging in still takes the exact name.
        # SQLite's LOWER() folds ASCII letters only, PostgreSQL's every letter its locale knows.
        constraints = [
            models.UniqueConstraint(
                Lower("username"),
                name=USERNAME_LOWER_UNIQUE,
                violation_error_message=USERNAME_TAKEN,
            )
        ]
