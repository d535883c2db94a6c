"""The one exception hierarchy of slipway.

    SlipwayError
     +-- SpecError              a slipway.yaml or request that fails validation (one or more problems)
     +-- NotFoundError          a named thing does not exist (or is not visible to the caller)
     +-- ConflictError          the thing exists already, or the request races another change
     +-- AuthError              missing, malformed, revoked or insufficiently scoped API key
     +-- BackendError           a backend could not start, stop or reach a replica or job
     +-- RuntimeLoadError       a model package's load() raised
     +-- UpstreamError          a replica failed or answered with an error

Every error carries a message that says what was wrong and how to fix it; the HTTP layers map
each class to a status code and the OpenAI error shape.
"""

from __future__ import annotations


class SlipwayError(Exception):
    """Base of every error slipway raises on purpose."""

    status_code: int = 500
    error_type: str = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class SpecError(SlipwayError):
    """Validation failed; `problems` lists each one as a line that names the field and the fix."""

    status_code = 400
    error_type = "invalid_request_error"

    def __init__(self, message: str, problems: list[str] | None = None, *, code: str | None = None) -> None:
        self.problems = list(problems or [])
        full = message if not self.problems else message + "\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(full, code=code)


class NotFoundError(SlipwayError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "not_found"


class ConflictError(SlipwayError):
    status_code = 409
    error_type = "invalid_request_error"
    code = "conflict"


class AuthError(SlipwayError):
    status_code = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class PermissionDeniedError(AuthError):
    status_code = 403
    error_type = "permission_error"
    code = "insufficient_scope"


class BackendError(SlipwayError):
    status_code = 503
    error_type = "server_error"
    code = "backend_error"


class RuntimeLoadError(SlipwayError):
    status_code = 500
    error_type = "server_error"
    code = "load_failed"


class UpstreamError(SlipwayError):
    status_code = 502
    error_type = "server_error"
    code = "upstream_error"
