// Calls to the management API and the session endpoints, with the dashboard header and the
// session cookie. Every error carries the server's message (the OpenAI error shape).

const DASHBOARD_HEADER = "X-Slipway-Dashboard";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

let onSignedOut = () => {};

/** Called when the server says the session is gone, so the app can show the sign-in page. */
export function whenSignedOut(handler) {
  onSignedOut = handler;
}

export async function api(path, { method = "GET", body } = {}) {
  const headers = { [DASHBOARD_HEADER]: "1", Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const message = data?.error?.message || `${response.status} ${response.statusText}`;
    if (response.status === 401 && !path.startsWith("/ui/session")) onSignedOut();
    throw new ApiError(response.status, message);
  }
  return data;
}

export const session = {
  current: () => api("/ui/session"),
  signIn: (key) => api("/ui/session", { method: "POST", body: { key } }),
  signOut: () => api("/ui/logout", { method: "POST" }),
};
