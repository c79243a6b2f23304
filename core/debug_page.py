"""What Django's debug page and error reports leave out."""

import re

from django.views.debug import SafeExceptionReporterFilter


class ExceptionReporterFilter(SafeExceptionReporterFilter):
    """Django's filter, which hides settings and request META entries named like keys and
    passwords, also hiding those named ``…_URL`` or ``LOCATION``: DATABASE_URL, DATABASE_APP_URL
    and REDIS_URL (which CACHES repeats as its LOCATION) may carry a password, and runserver's
    META holds the process's whole environment."""

    hidden_settings = re.compile(
        rf"{SafeExceptionReporterFilter.hidden_settings.pattern}|_URL$|^LOCATION$", flags=re.I
    )
