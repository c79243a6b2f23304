import contextlib
import os
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from conversations.management import user_from_argument
from conversations.portability import EXPORT_FORMATS, ExportProgress, conversations_export
from core import audit


class Command(BaseCommand):
    help = (
        "Write one user's conversations and messages, for a data-portability request: JSON Lines "
        "(a conversation line, then its message lines in append order; import_conversations reads "
        "it back) or a Markdown transcript. Streams from the database; progress goes to stderr."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", required=True, help="whose conversations: username or id")
        parser.add_argument(
            "--format",
            choices=list(EXPORT_FORMATS),
            default="jsonl",
            help="jsonl (default; one JSON object per line) or markdown (a transcript for people)",
        )
        parser.add_argument(
            "--output",
            metavar="FILE",
            help="write to FILE (replaced only once the export is complete) instead of stdout",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["format"] not in EXPORT_FORMATS:  # call_command passes options around argparse
            raise CommandError(f"--format: choose from {', '.join(EXPORT_FORMATS)}")
        user = user_from_argument(options["user"])

        def report(progress: ExportProgress) -> None:
            if options["verbosity"] >= 1:
                self.stderr.write(
                    f"  exported {progress.messages}/{progress.total_messages} messages, "
                    f"{progress.conversations}/{progress.total_conversations} conversations"
                )

        if not options["output"]:
            self.stdout.ending = ""
            try:
                # stdout is the data: the export's audit line goes to stderr.
                with audit.lines_to_stderr():
                    conversations_export(
                        user=user, out=self.stdout, output_format=options["format"], on_progress=report
                    )
            except BrokenPipeError:
                # The reader went away (`| head`): say so once, not again when Python flushes
                # stdout at exit.
                with contextlib.suppress(OSError, ValueError):
                    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                raise CommandError("The output was closed before the export was complete.") from None
            return
        target = Path(options["output"])
        partial = target.with_name(f".{target.name}.partial")
        try:
            with partial.open("w", encoding="utf-8", newline="\n") as out:
                conversations_export(user=user, out=out, output_format=options["format"], on_progress=report)
            os.replace(partial, target)
        except BaseException as exc:
            partial.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise CommandError(f"Cannot write {target}: {exc.strerror or exc}") from exc
            raise
        self.stdout.write(f"Wrote {target}.")
