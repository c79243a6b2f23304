from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from conversations.management import user_from_argument
from conversations.portability import format_timestamp
from conversations.retention import (
    DEFAULT_BATCH_SIZE,
    PruneCounts,
    conversations_expired_count,
    conversations_prune,
    parse_duration,
)


class Command(BaseCommand):
    help = (
        "Delete conversations (with their messages) whose latest activity, updated_at, is older "
        "than --older-than, across all users unless --user is given. Deletes in batches, each "
        "its own transaction; --dry-run only counts."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than",
            required=True,
            metavar="AGE",
            help="how long ago the latest activity must be: a whole number and a unit, "
            "w, d, h, m (minutes) or s, e.g. 90d, 12h, 30m",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="print how many conversations and messages would be deleted, and delete nothing",
        )
        parser.add_argument("--user", help="only this user's conversations (username or id)")
        parser.add_argument(
            "--batch-size",
            type=int,
            default=DEFAULT_BATCH_SIZE,
            help=f"conversations deleted per transaction (default {DEFAULT_BATCH_SIZE})",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        # Checked here rather than by argparse types: call_command passes keyword options
        # around the parser.
        try:
            cutoff = timezone.now() - parse_duration(str(options["older_than"]))
        except ValueError as exc:
            raise CommandError(f"--older-than: {exc}") from None
        except OverflowError:
            raise CommandError("--older-than: that reaches back before the year 1") from None
        if options["batch_size"] < 1:
            raise CommandError("--batch-size: must be at least 1")
        user = user_from_argument(options["user"]) if options["user"] else None
        whose = f"of {user.get_username()} " if user else ""
        expired = conversations_expired_count(cutoff=cutoff, user=user)
        description = (
            f"{expired.conversations} conversations {whose}with {expired.messages} messages, "
            f"last active before {format_timestamp(cutoff)}"
        )
        if options["dry_run"]:
            self.stdout.write(f"Dry run: would delete {description}. Nothing was deleted.")
            return
        if options["verbosity"] >= 1:
            self.stderr.write(f"Deleting {description}, {options['batch_size']} per batch.")

        def report(done: PruneCounts) -> None:
            if options["verbosity"] >= 1:
                self.stderr.write(
                    f"  deleted {done.conversations}/{expired.conversations} conversations "
                    f"({done.messages} messages)"
                )

        deleted = conversations_prune(
            cutoff=cutoff, user=user, batch_size=options["batch_size"], on_batch=report
        )
        self.stdout.write(
            f"Deleted {deleted.conversations} conversations {whose}with {deleted.messages} messages, "
            f"last active before {format_timestamp(cutoff)}."
        )
