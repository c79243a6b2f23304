"""The project's URLs plus test-only views under /api/test/ (ahead of the /api/ catch-all)."""

from django.urls import path

from config.tests import views
from config.urls import urlpatterns as project_urlpatterns
from core import errors

urlpatterns = [
    path("api/test/echo/", views.EchoView.as_view(), name="test-echo"),
    path("api/test/raw-body/", views.RawBodyView.as_view(), name="test-raw-body"),
    path("api/test/plain/raw-body/", views.plain_raw_body_view, name="test-plain-raw-body"),
    path("api/test/fails/", views.FailingView.as_view(), name="test-fails"),
    path("api/test/database-error/", views.DatabaseErrorView.as_view(), name="test-database-error"),
    path(
        "api/test/unreachable-database/",
        views.UnreachableDatabaseView.as_view(),
        name="test-unreachable-database",
    ),
    path("api/test/missing/", views.MissingObjectView.as_view(), name="test-missing"),
    path("api/test/plain/fails/", views.plain_failing_view, name="test-plain-fails"),
    path(
        "api/test/plain/unreachable-database/",
        views.plain_unreachable_database_view,
        name="test-plain-unreachable-database",
    ),
    path("api/test/plain/missing/", views.plain_missing_view, name="test-plain-missing"),
    *project_urlpatterns,
]

handler400 = errors.bad_request
handler403 = errors.permission_denied
handler404 = errors.page_not_found
handler500 = errors.server_error
