"""Optional TLS around transport links (confidentiality and integrity on the wire).

The HMAC handshake (``auth.py``) decides *who* may use a link; it does not hide or protect
frames from someone on the path. Where the network between members is not private, turn TLS
on: state nodes serve with a certificate signed by the cluster's CA
(``transport_tls_cert_file``/``_key_file``), and every member verifies it against that CA
(``transport_tls_ca_file``), host name included (the certificate must name the address the
node publishes). The HMAC handshake still runs inside TLS: a certificate proves a state
node's host, the secrets prove the role.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

from infrastructure.errors import ConfigurationError

if TYPE_CHECKING:
    from infrastructure.settings import Settings


def server_context(settings: Settings) -> ssl.SSLContext | None:
    """The state node's TLS context; None when transport TLS is off."""
    if not settings.transport_tls_cert_file:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(settings.transport_tls_cert_file, settings.transport_tls_key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"XPLATFORM_TRANSPORT_TLS_CERT_FILE/_KEY_FILE cannot be used: {exc}") from None
    return context


def client_context(settings: Settings) -> ssl.SSLContext | None:
    """How members verify state nodes; None when transport TLS is off."""
    if not settings.transport_tls_ca_file:
        return None
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=settings.transport_tls_ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"XPLATFORM_TRANSPORT_TLS_CA_FILE cannot be used: {exc}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
