"""Errors the gateway answers itself, each mapped to an HTTP status and the OpenAI error shape.

An error class with `retry_after = True` is answered with a Retry-After header
(GatewayConfig.retry_after_seconds).
"""

from __future__ import annotations

from slipway.errors import BackendError, SlipwayError, SpecError


class BodyTooLargeError(SlipwayError):
    status_code = 413
    error_type = "invalid_request_error"
    code = "body_too_large"


class InvalidJSONError(SpecError):
    code = "invalid_json"


class MethodNotAllowedError(SlipwayError):
    status_code = 405
    error_type = "invalid_request_error"
    code = "method_not_allowed"


class NoReadyReplicaError(BackendError):
    """No replica can take the request now; answered with Retry-After."""

    code = "no_ready_replica"
    retry_after = True


class ColdStartTimeoutError(NoReadyReplicaError):
    """A held request's deployment got no ready replica within cold_start_timeout; answered with Retry-After."""

    code = "cold_start_timeout"


class NotServingError(BackendError):
    """The deployment failed to load or was deactivated: holding a request for it would only time out."""

    code = "deployment_not_serving"


class ColdStartQueueFullError(SlipwayError):
    """Too many requests are held for one deployment; answered 429 with Retry-After.

    429 with `rate_limit_error`: OpenAI clients retry it after Retry-After, which is what a client
    should do while a replica starts.
    """

    status_code = 429
    error_type = "rate_limit_error"
    code = "cold_start_queue_full"
    retry_after = True
