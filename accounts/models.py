import uuid

from django.contrib.auth.models import AbstractUser
from django.db import models


class User(AbstractUser):
    """A user whose primary key is a UUID, so ``user_id`` is a UUID everywhere in the API.

    Users of an external identity provider get their id from the provider's token, which is
    why the key is not time-ordered: it is often chosen elsewhere.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
