// The admin API client: every call carries the admin token from sessionStorage. A 401 signs the
// user out (the token was wrong or rotated).

const TOKEN_KEY = "nexus.adminToken";

export class ApiError extends Error {
  constructor(status, body) {
    const err = body && body.error ? body.error : null;
    super(err && err.message ? err.message : `HTTP ${status}`);
    this.status = status;
    this.code = err ? err.code : null;
    this.type = err ? err.type : null;
    // The request field the server blamed (`param` of an OpenAI-style error body), if any.
    this.param = err && err.param ? err.param : null;
  }
}

let unauthorizedHandler = () => {};
export function onUnauthorized(fn) {
  unauthorizedHandler = fn;
}

export function getToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  } catch {
    return "";
  }
}

export function setToken(token) {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // Private modes may refuse storage; the app then asks again on reload.
  }
}

/** Calls the admin API; resolves with the JSON body (null for 204), rejects with ApiError. */
export async function api(method, path, body, { token, signal } = {}) {
  const headers = { Authorization: `Bearer ${token || getToken()}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: "no-store",
    });
  } catch (e) {
    if (e && e.name === "AbortError") throw e;
    throw new ApiError(0, { error: { message: "Cannot reach the server. Is nexus-server running?" } });
  }
  if (res.status === 204) return null;
  let data = null;
  const text = await res.text();
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!res.ok) {
    const err = new ApiError(res.status, data);
    if (res.status === 401 && !token) unauthorizedHandler(err);
    throw err;
  }
  return data;
}

/**
 * Fetches `path` with the admin token and resolves with the body as a Blob (for downloads: a
 * plain link cannot carry the Authorization header). Rejects with ApiError like `api`.
 */
export async function fetchBlob(path, { signal } = {}) {
  let res;
  try {
    res = await fetch(path, { headers: { Authorization: `Bearer ${getToken()}` }, signal, cache: "no-store" });
  } catch (e) {
    if (e && e.name === "AbortError") throw e;
    throw new ApiError(0, { error: { message: "Cannot reach the server. Is nexus-server running?" } });
  }
  if (!res.ok) {
    let data = null;
    try {
      data = JSON.parse(await res.text());
    } catch {
      data = null;
    }
    const err = new ApiError(res.status, data);
    if (res.status === 401) unauthorizedHandler(err);
    throw err;
  }
  return res.blob();
}

export const get = (path, opts) => api("GET", path, undefined, opts);
export const post = (path, body, opts) => api("POST", path, body ?? {}, opts);
export const patch = (path, body) => api("PATCH", path, body);
export const del = (path) => api("DELETE", path);

/** The URL of the chat WebSocket; browsers cannot set headers on it, so the token rides in the query. */
export function wsUrl() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  return `${proto}//${location.host}/ws/chat?token=${encodeURIComponent(getToken())}`;
}
