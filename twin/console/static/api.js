// The console's server API: the session (CSRF token), actions, and the two event streams.

let session = null;

export async function loadSession() {
  const response = await fetch("/api/session", { credentials: "same-origin", cache: "no-store" });
  if (response.status === 401) {
    toLogin();
    return null;
  }
  session = await response.json();
  return session;
}

export function currentSession() {
  return session;
}

export function toLogin(reason) {
  if (reason) sessionStorage.setItem("locktwin-ended", reason);
  window.location.assign("/login");
}

// POST an action with the session's CSRF token; resolves to {status, body} (never throws on HTTP errors).
export async function post(path, body) {
  let response;
  try {
    response = await fetch(path, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": session ? session.csrf : "" },
      body: JSON.stringify(body ?? {}),
    });
  } catch (error) {
    return { status: 0, body: { error: { code: "NETWORK", message: `the console did not answer (${error})` } } };
  }
  const answer = await response.json().catch(() => ({ error: { code: "HTTP", message: response.statusText } }));
  if (response.status === 401) toLogin("Your session has ended: log in again.");
  return { status: response.status, body: answer };
}

// An EventSource that reconnects, and sends the person to the login page once the session is gone.
export function stream(path, handlers) {
  let source = null;
  let closed = false;
  const open = () => {
    source = new EventSource(path, { withCredentials: true });
    for (const [name, handler] of Object.entries(handlers)) {
      source.addEventListener(name, (event) => handler(JSON.parse(event.data)));
    }
    source.addEventListener("end", () => {
      source.close();
      toLogin("Your session has ended: log in again.");
    });
    source.onerror = async () => {
      if (closed || source.readyState !== EventSource.CLOSED) return; // the browser retries by itself
      const check = await fetch("/api/session", { credentials: "same-origin", cache: "no-store" }).catch(() => null);
      if (check && check.status === 401) toLogin("Your session has ended: log in again.");
      else if (!closed) setTimeout(open, 2000);
    };
  };
  open();
  return { close: () => { closed = true; source.close(); } };
}
