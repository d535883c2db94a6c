"""The web dashboard: a single page served by the control plane, same origin as /api/v1.

    app.py       the /ui routes: the page, its static files, sign-in and sign-out
    sessions.py  session id -> principal, in memory, bounded and expiring
    static/      the page itself: HTML, CSS and JavaScript modules, no build step

A visitor signs in with an API key; the browser then holds only an opaque session cookie, which
the management API accepts in place of a key on requests the dashboard's scripts make.
"""

from slipway.web.app import DASHBOARD_PREFIX, create_dashboard_app
from slipway.web.sessions import DashboardSessions, SessionConfig

__all__ = ["DASHBOARD_PREFIX", "DashboardSessions", "SessionConfig", "create_dashboard_app"]
