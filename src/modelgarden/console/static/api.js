// The console's one way to the gateway: same-origin fetch, the API key from session storage
// on every call, and one key prompt (shared by concurrent calls) when the gateway says 401.

const KEY = "garden.key";

/** An error answer from the gateway, with its status and message. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** The message of an error body in either API's shape. */
async function errorMessage(res) {
  const text = await res.text();
  try {
    const body = JSON.parse(text);
    const error = body.error;
    if (typeof error === "string") return error;
    if (error && typeof error.message === "string") return error.message;
  } catch {
    // not JSON: fall through to the text
  }
  return text.trim() || `${res.status} ${res.statusText}`;
}

let asking = null;

/** Ask for the API key once, however many calls are waiting for it. */
function askKey(reason) {
  if (asking) return asking;
  const dialog = document.getElementById("key-dialog");
  const input = document.getElementById("key-input");
  document.getElementById("key-reason").textContent = reason || "";
  input.value = "";
  dialog.returnValue = ""; // Escape closes without setting it
  asking = new Promise((resolve, reject) => {
    dialog.addEventListener(
      "close",
      () => {
        asking = null;
        const key = input.value.trim();
        if (dialog.returnValue === "ok" && key) {
          sessionStorage.setItem(KEY, key);
          resolve();
        } else {
          reject(new ApiError(401, "an API key is needed"));
        }
      },
      { once: true },
    );
  });
  dialog.showModal();
  input.focus();
  return asking;
}

/**
 * Call the gateway. `body` is sent as JSON. Resolves to the Response when it is OK; an error
 * answer is thrown as an ApiError with the gateway's own message.
 */
export async function api(path, { method = "GET", body, signal } = {}) {
  for (let attempt = 0; ; attempt++) {
    const headers = {};
    const key = sessionStorage.getItem(KEY);
    if (key) headers.Authorization = `Bearer ${key}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
    });
    if (res.status === 401 && attempt < 3) {
      const message = await errorMessage(res);
      if (key) sessionStorage.removeItem(KEY);
      await askKey(key ? `That key was refused: ${message}` : "");
      continue;
    }
    if (!res.ok) throw new ApiError(res.status, await errorMessage(res));
    return res;
  }
}

/** GET or send, then the JSON body. */
export async function json(path, options) {
  return (await api(path, options)).json();
}

/** The records of an NDJSON answer as they arrive; an `{"error"}` line is thrown. */
export async function* ndjson(res) {
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    buffer += decoder.decode(value || new Uint8Array(), { stream: !done });
    let newline;
    while ((newline = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, newline).trim();
      buffer = buffer.slice(newline + 1);
      if (line) yield parseRecord(line);
    }
    if (done) break;
  }
  if (buffer.trim()) yield parseRecord(buffer.trim());
}

function parseRecord(line) {
  const record = JSON.parse(line);
  if (record.error) throw new ApiError(500, record.error);
  return record;
}
