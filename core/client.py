"""Who the client is: the one place that reads ``X-Forwarded-For``.

The address is the connection's peer (``REMOTE_ADDR``) unless ``API_TRUSTED_PROXIES`` says how
many proxies in front of the service append to ``X-Forwarded-For``. Each proxy appends the
address it received the request from, so with N trusted proxies the Nth entry from the right
is the client as the outermost trusted proxy saw it; entries further left are whatever the
client chose to send and are never read. Throttles, ``/metrics`` and the security log all ask
this module, so a forged header cannot move a client into another's quota or onto loopback.
"""

from django.conf import settings
from django.http import HttpRequest


def client_address(request: HttpRequest) -> str:
    """The client's IP address as the outermost trusted hop saw it ("" when unknown)."""
    peer: str = request.META.get("REMOTE_ADDR") or ""
    trusted: int = settings.API_TRUSTED_PROXIES
    if trusted <= 0:
        return peer
    header: str = request.META.get("HTTP_X_FORWARDED_FOR", "")
    hops = [hop.strip() for hop in header.split(",") if hop.strip()]
    if len(hops) < trusted:
        # Fewer hops than trusted proxies: the request did not come through all of them (a
        # direct connection to the service), so no entry is known to be a proxy's.
        return peer
    forwarded: str = hops[-trusted]
    return forwarded
