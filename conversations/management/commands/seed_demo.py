import secrets
from typing import Any

from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.models import User
from accounts.services import user_register
from conversations import selectors, services
from core.rls import user_scope

DEFAULT_USERNAME = "demo"

# (title, turns): each turn is (role, content, tool_calls).
Turn = tuple[str, str | None, list[dict[str, Any]] | None]
DEMO_CONVERSATIONS: list[tuple[str, list[Turn]]] = [
    (
        "Planning a weekend in Lisbon",
        [
            ("user", "I have two days in Lisbon next month. What should I not miss?", None),
            (
                "assistant",
                "Two days is enough for the essentials:\n\n"
                "1. **Day 1**: Alfama in the morning, tram 28 up to the castle, sunset at the "
                "Miradouro da Senhora do Monte.\n"
                "2. **Day 2**: Belém (the tower, the monastery, and a pastel de nata at the "
                "original bakery), then LX Factory in the evening.\n\n"
                "Would you like restaurant suggestions as well?",
                None,
            ),
            ("user", "Yes please, something casual near Alfama.", None),
            (
                "assistant",
                "Try a *tasca*: small family places with a short menu of the day. Grilled "
                "sardines in season, bacalhau à brás otherwise. Book ahead on Friday nights "
                "if there is fado.",
                None,
            ),
        ],
    ),
    (
        "Weather for the hike",
        [
            ("user", "Will it rain in Sintra on Saturday?", None),
            (
                "assistant",
                None,
                [
                    {
                        "id": "call_weather_1",
                        "type": "function",
                        "function": {
                            "name": "get_forecast",
                            "arguments": '{"location": "Sintra, PT", "date": "saturday"}',
                        },
                    }
                ],
            ),
            (
                "assistant",
                "The forecast for Sintra on Saturday: cloudy in the morning, a 20% chance of "
                "light rain after 3 pm, 17 °C. Start early and pack a light jacket.",
                None,
            ),
        ],
    ),
    (
        "Fixing a flaky test",
        [
            (
                "user",
                "My pytest test passes alone but fails in the full suite. Where do I start?",
                None,
            ),
            (
                "assistant",
                "That is almost always shared state between tests. Check, in this order:\n\n"
                "- module-level caches or singletons that one test fills;\n"
                "- monkeypatching done without the `monkeypatch` fixture;\n"
                "- database rows left behind by a test that commits.\n\n"
                "Run `pytest -p no:randomly --lf` and then bisect the suite with `-k` to find "
                "the test that leaks.",
                None,
            ),
        ],
    ),
]


class Command(BaseCommand):
    help = (
        "Create a demo user with a few realistic conversations, through the service layer. "
        "Idempotent: an existing user and the conversations it already has are kept."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--username", default=DEFAULT_USERNAME, help=f"the demo user (default {DEFAULT_USERNAME!r})"
        )
        parser.add_argument(
            "--password",
            help="the demo user's password (checked by the password validators); default: a random "
            "one for a new user, the current one for an existing user",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        user, password = self._user(options["username"], options["password"])
        created = self._seed(user, verbose=options["verbosity"] >= 1)
        self.stdout.write(
            f"{created} demo conversations created, {len(DEMO_CONVERSATIONS) - created} already there."
        )
        # The credentials are the output's last lines, after every audit line (the audit logger
        # writes JSON lines to this same stdout) and every progress line, where a newcomer looks.
        self.stderr.flush()
        self.stdout.write(
            f"Username: {user.get_username()}\n"
            f"Password: {password if password is not None else '(unchanged; set one with --password)'}"
        )
        self.stdout.flush()

    def _user(self, username: str, password: str | None) -> tuple[User, str | None]:
        """The demo user, made or given the new password; and its password, when known."""
        user = User.objects.filter(username=User.normalize_username(username)).first()
        if user is None:
            password = password or secrets.token_urlsafe(12)
            try:
                user = user_register(username=username, password=password)
            except ValidationError as exc:
                raise CommandError(_describe(exc)) from exc
            self.stdout.write(f"Created the user {user.get_username()}.")
        elif password is not None:
            try:
                validate_password(password, user=user)
            except ValidationError as exc:
                raise CommandError(_describe(exc)) from exc
            user.set_password(password)
            user.save(update_fields=["password"])
            self.stdout.write(f"Set a new password for the existing user {user.get_username()}.")
        return user, password

    def _seed(self, user: User, *, verbose: bool) -> int:
        """Makes the demo conversations the user does not have yet; returns how many."""
        created = 0
        for title, turns in DEMO_CONVERSATIONS:
            # One transaction per conversation: a rerun never finds one half made.
            with user_scope(user, atomic=True):
                if selectors.conversation_list(user=user).filter(title=title).exists():
                    continue
                conversation = services.conversation_create(user=user, title=title)
                for role, content, tool_calls in turns:
                    services.message_append(
                        user=user,
                        conversation_id=conversation.pk,
                        role=role,
                        content=content,
                        tool_calls=tool_calls,
                    )
            created += 1
            if verbose:
                self.stderr.write(f"  created {title!r} ({len(turns)} messages)")
        return created


def _describe(exc: ValidationError) -> str:
    if hasattr(exc, "error_dict"):
        return " ".join(f"{field}: {' '.join(messages)}" for field, messages in exc.message_dict.items())
    return " ".join(exc.messages)
