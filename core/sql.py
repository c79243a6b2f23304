"""Helpers for the few data statements written by hand on the hot paths, where the ORM's
building of the same query on every call costs more than running it (``accounts/statements.py``,
``conversations/statements.py``): they are written once per database from the models' own
names, and their values are adapted and converted as the models' fields do it."""

# The settings import this module (through rls), before django-stubs-ext makes Field subscriptable.
from __future__ import annotations

from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field, Model


def field(model: type[Model], name: str) -> Field[Any, Any]:
    """The concrete field ``name`` of ``model`` (a column of its table)."""
    found = model._meta.get_field(name)
    assert isinstance(found, Field)  # noqa: S101 (callers name columns)
    return found


def column(model: type[Model], name: str, connection: BaseDatabaseWrapper) -> str:
    """The quoted column of ``model``'s field ``name``."""
    return connection.ops.quote_name(field(model, name).column)


def table(model: type[Model], connection: BaseDatabaseWrapper) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def db_value(model: type[Model], name: str, value: object, connection: BaseDatabaseWrapper) -> Any:
    """``value`` as ``model``'s field ``name`` stores it (a UUID is 32 hex digits on SQLite)."""
    return field(model, name).get_db_prep_value(value, connection)


def from_db(model: type[Model], name: str, value: object, connection: BaseDatabaseWrapper) -> Any:
    """A value of ``model``'s field ``name`` read by hand, converted as the ORM converts it
    (SQLite hands datetimes over as text)."""
    col = field(model, name).get_col(model._meta.db_table)
    for convert in connection.ops.get_db_converters(col) + col.get_db_converters(connection):
        value = convert(value, col, connection)
    return value
