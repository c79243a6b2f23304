"""The benchmark's users and their access tokens."""

from rest_framework_simplejwt.tokens import AccessToken

from accounts.models import User

USERNAME_PREFIX = "bench-user-"


def ensure_users(count: int) -> list[User]:
    """``count`` users named ``bench-user-000``…, created when missing, in name order."""
    names = [f"{USERNAME_PREFIX}{i:03d}" for i in range(count)]
    existing = set(User.objects.filter(username__in=names).values_list("username", flat=True))
    missing = []
    for name in names:
        if name not in existing:
            user = User(username=name)
            user.set_unusable_password()
            missing.append(user)
    User.objects.bulk_create(missing)
    return sorted(User.objects.filter(username__in=names), key=lambda u: u.username)


def access_token(user: User) -> str:
    """A bearer token as the chat front end would send (lifetime from the settings)."""
    return str(AccessToken.for_user(user))
