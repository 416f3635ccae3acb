"""The retraining signal: a JSON event POSTed to a webhook (an Argo Events webhook EventSource on
clusters), retried with exponential backoff; stdlib urllib, so the service has no HTTP client dep."""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from rooivalk.plan import WebhookSpec

log = logging.getLogger(__name__)


def post_event(
    spec: WebhookSpec, event: dict[str, Any], sleep: Callable[[float], None] = time.sleep
) -> tuple[bool, str]:
    """POST `event` to spec.url; a 2xx answer is success, anything else (or no answer) is retried
    up to spec.max_attempts times, waiting backoff_s, 2*backoff_s, ... Returns (sent, detail)."""
    if not spec.url:
        return False, "no webhook configured"
    body = json.dumps(event).encode()
    detail = ""
    for attempt in range(1, spec.max_attempts + 1):
        request = urllib.request.Request(
            spec.url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=spec.timeout_s) as response:
                return True, f"HTTP {response.status} after {attempt} attempt(s)"
        except urllib.error.HTTPError as error:
            detail = f"HTTP {error.code}"
        except (urllib.error.URLError, OSError) as error:
            detail = f"{type(error).__name__}: {error}"
        log.warning("retraining webhook %s: attempt %d/%d failed (%s)", spec.url, attempt, spec.max_attempts, detail)
        if attempt < spec.max_attempts:
            sleep(spec.backoff_s * 2 ** (attempt - 1))
    return False, f"{spec.url}: gave up after {spec.max_attempts} attempts ({detail})"
