from django.urls import path
from rest_framework.routers import DefaultRouter, Route

from .views import ConversationViewSet, ExportView, MessageViewSet, SearchViewSet


class Router(DefaultRouter):
    # No `<id>.json` routes: the views take no `format` argument (those paths were 500s), and
    # this API has one representation. Unmatched, such paths get the JSON 404 of any other.
    include_format_suffixes = False
    # DELETE on a list clears it, for the viewsets that have a `clear` (the messages).
    routes = [
        route._replace(mapping={**route.mapping, "delete": "clear"})
        if isinstance(route, Route) and route.name == "{basename}-list"
        else route
        for route in DefaultRouter.routes
    ]


router = Router()
router.register("conversations", ConversationViewSet, basename="conversation")
router.register(
    r"conversations/(?P<conversation_pk>[^/.]+)/messages",
    MessageViewSet,
    basename="conversation-message",
)

router.register("search", SearchViewSet, basename="search")

urlpatterns = [*router.urls, path("export/", ExportView.as_view(), name="export")]
