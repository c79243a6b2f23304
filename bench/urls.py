"""The service's URLs, with control F1 under ``/bench/f1/`` (outside ``/api/``)."""

from django.urls import path

from bench import controls
from config import urls as service_urls

urlpatterns = [
    path("bench/f1/conversations/", controls.conversation_list),
    path("bench/control/conversations-without-preview/", controls.conversation_list_without_preview),
    path("bench/f1/conversations/<uuid:conversation_id>/history/", controls.history),
    path("bench/f1/conversations/<uuid:conversation_id>/messages/", controls.messages),
    *service_urls.urlpatterns,
]

handler400 = service_urls.handler400
handler403 = service_urls.handler403
handler404 = service_urls.handler404
handler500 = service_urls.handler500
