from django.conf import settings
from django.urls import include, path, re_path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from core import errors, health, metrics

urlpatterns = [
    # A newcomer's first look at http://127.0.0.1:8000/ lands on the API's documentation.
    path(
        "",
        RedirectView.as_view(pattern_name="swagger-ui", permanent=False, http_method_names=["get", "head"]),
        name="root",
    ),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.metrics_view, name="metrics"),
    path("api/v1/auth/", include("accounts.urls")),
    path("api/v1/", include("conversations.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
]

if settings.BROWSABLE_API:
    # Session login for the browsable API, a development aid only.
    urlpatterns.append(path("api-auth/", include("rest_framework.urls")))

# Anything else under /api/ is a JSON 404, also with DEBUG on (whose 404 page is HTML).
urlpatterns.append(re_path(r"^api(/|$)", errors.api_not_found))

# For exceptions raised outside views (in middleware): JSON under /api/, Django's pages elsewhere.
handler400 = errors.bad_request
handler403 = errors.permission_denied
handler404 = errors.page_not_found
handler500 = errors.server_error
