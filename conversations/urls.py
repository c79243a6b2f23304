from rest_framework.routers import DefaultRouter

from .views import ConversationViewSet, MessageViewSet

router = DefaultRouter()
router.register("conversations", ConversationViewSet, basename="conversation")
router.register(
    r"conversations/(?P<conversation_pk>[^/.]+)/messages",
    MessageViewSet,
    basename="conversation-message",
)

urlpatterns = router.urls
