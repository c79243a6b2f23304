"""Views that exist only in tests, to reach each error path of a DRF view and of a plain one."""

from typing import Any

from django.db import OperationalError
from django.db.utils import load_backend
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

UNREACHABLE_ALIAS = "unreachable"
SECRET = "secret-detail-that-must-not-leak"


# Set by the unreachable_database fixture: settings of a database server that is not there.
unreachable_database: dict[str, Any] = {}


def unreachable_connection():
    """A connection object that is in no DATABASES alias: Django's test case lets it connect."""
    return load_backend(unreachable_database["ENGINE"]).DatabaseWrapper(
        unreachable_database, UNREACHABLE_ALIAS
    )


def query_unreachable_database() -> None:
    connection = unreachable_connection()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        connection.close()


class OpenView(APIView):
    """No authentication; throttling as configured."""

    authentication_classes = ()
    permission_classes = (AllowAny,)


class EchoView(OpenView):
    def get(self, request: Request) -> Response:
        return Response({"status": "ok"})

    def post(self, request: Request) -> Response:
        return Response({"received": request.data})


class RawBodyView(OpenView):
    def post(self, request: Request) -> Response:
        return Response({"length": len(request.body)})


class FailingView(OpenView):
    def get(self, request: Request) -> Response:
        raise RuntimeError(SECRET)


class DatabaseErrorView(OpenView):
    def get(self, request: Request) -> Response:
        raise OperationalError(f"connection refused: {SECRET}")


class UnreachableDatabaseView(OpenView):
    def get(self, request: Request) -> Response:
        query_unreachable_database()
        return Response({"status": "ok"})


class MissingObjectView(OpenView):
    def get(self, request: Request) -> Response:
        raise Http404("No Conversation matches the given query.")


@csrf_exempt
def plain_raw_body_view(request: HttpRequest) -> HttpResponse:
    return HttpResponse(str(len(request.body)))


def plain_failing_view(request: HttpRequest) -> HttpResponse:
    raise RuntimeError(SECRET)


def plain_unreachable_database_view(request: HttpRequest) -> HttpResponse:
    query_unreachable_database()
    return HttpResponse("ok")


def plain_missing_view(request: HttpRequest) -> HttpResponse:
    raise Http404("No Conversation matches the given query.")


class FailInMiddleware:
    """Raises, outside any view, for one path: what Django's handler500 is for."""

    PATH = "/api/test/middleware-fails/"

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info == self.PATH:
            raise RuntimeError(SECRET)
        return self.get_response(request)
