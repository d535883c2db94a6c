"""Errors the gateway answers itself, each mapped to an HTTP status and the OpenAI error shape."""

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
