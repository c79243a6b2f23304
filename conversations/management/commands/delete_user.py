import sys
from typing import IO, Any

from django.core.management.base import BaseCommand, CommandParser

from accounts.services import user_delete
from conversations.management import user_from_argument
from conversations.selectors import UserData, user_data_count
from core import audit


class Command(BaseCommand):
    help = (
        "Delete a user with all of their conversations, messages and idempotency keys (what the "
        "admin site's delete did, for an admin-free API). Asks for confirmation unless --no-input; "
        "--dry-run only counts."
    )
    # call_command(..., stdin=StringIO(...)) stands in for standard input.
    stealth_options = ("stdin",)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("user", metavar="USER", help="the user to delete: username or id")
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="print how many conversations and messages would be deleted, and delete nothing",
        )
        parser.add_argument(
            "--no-input",
            "--noinput",
            action="store_false",
            dest="interactive",
            help="do not ask for confirmation (for scripts)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        user = user_from_argument(options["user"])
        who = f"user {user.get_username()!r} ({user.pk})"  # before the delete, which clears pk
        description = f"{who} with {counted(user_data_count(user=user))}"
        if options["dry_run"]:
            self.stdout.write(f"Dry run: would delete {description}. Nothing was deleted.")
            return
        if options["interactive"] and not self.confirmed(description, options.get("stdin") or sys.stdin):
            self.stdout.write("Cancelled: nothing was deleted.")
            return
        with audit.operation("user.delete", user_id=user.pk) as fields:
            deleted = UserData.from_deleted(user_delete(user=user))
            fields.update(conversations=deleted.conversations, messages=deleted.messages)
        self.stdout.write(f"Deleted {who} with {counted(deleted)}.")

    def confirmed(self, description: str, stdin: IO[str]) -> bool:
        self.stdout.write(f"This deletes {description}, for good. Type 'yes' to go on: ", ending="")
        self.stdout.flush()
        return stdin.readline().strip().lower() == "yes"


def counted(data: UserData) -> str:
    return f"{data.conversations} conversations and {data.messages} messages"
