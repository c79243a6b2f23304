import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from conversations.management import user_from_argument
from conversations.portability import ImportReport, conversations_import


class Command(BaseCommand):
    help = (
        "Read the JSON Lines of export_conversations into one user's account, keeping ids, "
        "order and timestamps. Idempotent: conversations the user already has are skipped. "
        "Each line is validated as the API validates; a conversation with a bad line is not "
        "imported and the line is reported by number. One transaction per conversation."
    )
    # call_command(..., stdin=StringIO(...)) stands in for standard input.
    stealth_options = ("stdin",)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", required=True, help="into whose account: username or id")
        parser.add_argument(
            "file", nargs="?", default="-", metavar="FILE", help="the JSON Lines file; - or none: stdin"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        user = user_from_argument(options["user"])

        def report_progress(report: ImportReport) -> None:
            if options["verbosity"] >= 1:
                self.stderr.write(
                    f"  {report.conversations_imported} conversations imported "
                    f"({report.messages_imported} messages), {report.conversations_skipped} already "
                    f"there, {report.conversations_refused} refused"
                )

        with self._lines(options["file"], options.get("stdin")) as lines:
            report = conversations_import(user=user, lines=lines, on_progress=report_progress)

        for warning in report.warnings:
            self.stderr.write(f"warning: {warning}")
        self.stdout.write(
            f"Imported {report.conversations_imported} conversations with {report.messages_imported} "
            f"messages into {user.get_username()}'s account; {report.conversations_skipped} were "
            f"already there."
        )
        if report.error_count:
            listed = "\n".join(f"  {error}" for error in report.errors)
            more = report.error_count - len(report.errors)
            raise CommandError(
                f"{report.conversations_refused} conversations not imported, {report.error_count} "
                f"problems:\n{listed}" + (f"\n  … and {more} more" if more else "")
            )

    @contextmanager
    def _lines(self, name: str, stdin: IO[Any] | None) -> Iterator[IO[Any]]:
        if name == "-":
            stream = stdin or sys.stdin
            # Bytes, so that a line that is not UTF-8 is reported by number.
            yield getattr(stream, "buffer", stream)
            return
        try:
            handle = open(name, "rb")  # noqa: SIM115 (closed below; the OSError must be ours)
        except OSError as exc:
            raise CommandError(f"Cannot read {name}: {exc.strerror or exc}") from exc
        with handle:
            yield handle
