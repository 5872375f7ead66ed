"""The form of a webhook signing secret (``whsec_<base64>``) and the signer it makes."""

from __future__ import annotations

import base64
import binascii

from standardwebhooks import Webhook
from standardwebhooks.webhooks import EmptyWebhookSecretError

WEBHOOK_SECRET_PREFIX = "whsec_"


def webhook_signer(secret: str) -> Webhook:
    """The Standard Webhooks signer of a ``whsec_<base64>`` secret; ValueError if it is not
    one (at least 24 bytes, as the spec asks)."""
    if not secret.startswith(WEBHOOK_SECRET_PREFIX):
        raise ValueError(f"a webhook secret is written {WEBHOOK_SECRET_PREFIX}<base64>")
    try:
        signer = Webhook(secret)
        key = base64.b64decode(secret.removeprefix(WEBHOOK_SECRET_PREFIX) + "==")
    except (ValueError, binascii.Error, EmptyWebhookSecretError) as exc:
        raise ValueError(f"not a usable webhook secret: {exc}") from None
    if len(key) < 24:
        raise ValueError("a webhook secret's key has at least 24 bytes (32 recommended)")
    return signer
