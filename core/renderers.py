from collections.abc import Mapping
from typing import Any

from rest_framework.renderers import JSONRenderer


class EscapedJSONRenderer(JSONRenderer):
    ensure_ascii = True


class SafeJSONRenderer(JSONRenderer):
    """UTF-8 JSON that cannot fail on text UTF-8 cannot encode, always compact.

    A lone surrogate can arrive in a request (JSON allows ``"\\ud800"``) and be echoed
    back in an error message; such a body is rendered with ``\\u`` escapes instead of
    raising UnicodeEncodeError, which would turn a 400 into a 500. DRF would indent on
    request (``Accept: application/json; indent=8``), growing an answer past
    ``API_MAX_RESPONSE_BYTES``, which counts compact JSON: a client's indent is not taken.
    """

    def get_indent(self, accepted_media_type: str, renderer_context: Mapping[str, Any]) -> int | None:
        # Only the browsable API (development) asks for one, through the context.
        indent: int | None = renderer_context.get("indent")
        return indent

    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: Mapping[str, Any] | None = None,
    ) -> bytes:
        try:
            return bytes(super().render(data, accepted_media_type, renderer_context))
        except UnicodeEncodeError:
            return bytes(EscapedJSONRenderer().render(data, accepted_media_type, renderer_context))
