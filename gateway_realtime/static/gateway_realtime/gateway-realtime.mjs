// django-gateway-realtime's browser module: minting, waiting out a busy
// setup endpoint, typed errors, and the Gateway WebSocket for pages that
// bring their own JavaScript. No build step, no dependencies, no globals.
//
//   import { connect } from "/static/gateway_realtime/gateway-realtime.mjs";
//   const socket = await connect();   // the page's {% gateway_realtime_config %} block
//
// The voice, dictation and speech elements (elements.mjs) mint through this
// module too, so a page and its elements share one retry policy:
//
// - mintSecret(setupUrl) POSTs the setup endpoint for a client secret. A busy
//   answer (503, or 429 but for `quota_exceeded`) is waited out: Retry-After
//   when sent, else an exponential backoff with jitter, each wait capped at
//   busyMaxBackoffMs (a longer Retry-After is not waited for), up to
//   busyMaxAttempts requests in all. Any other failure, and giving up, is a
//   GatewayRealtimeError with the endpoint's `status` and error `type`.
// - connect() opens the Gateway WebSocket with the contract's subprotocols
//   ([marker, "ai-gateway-auth.<token>", team?]), using the page's own secret
//   when it is fresh and unused, else one from mintSecret. A secret is
//   single-use: when the page's own is refused before the socket opens, one
//   fresh secret is minted and tried once; nothing else is retried.
//
// connect() reports on the config block (or `eventTarget`): its
// data-gateway-realtime-state follows "connecting", "busy" (waiting on a busy
// setup endpoint), then "open" or "error", each change a
// `gateway-realtime-state` event ({state, error?}); each busy wait starts with
// a `gateway-realtime-retrying` event ({attempt, retryInMs, errorType,
// status, retryAfterMs}). Both bubble. An AbortSignal (`signal`) stops
// either function at any point.

const AUTH_PREFIX = "ai-gateway-auth.";

/** The defaults of mintSecret's and connect()'s options. */
export const DEFAULTS = Object.freeze({
  // A busy setup endpoint (503 or 429): requests to it in all, before giving up,
  busyMaxAttempts: 5,
  // the first wait when it sends no Retry-After (doubled per busy answer),
  busyBackoffMs: 1000,
  // the longest wait (a Retry-After beyond it gives up at once),
  busyMaxBackoffMs: 30000,
  // and up to this fraction of the wait added at random, so that a crowd of
  // pages turned away together does not come back together.
  busyJitter: 0.5,
  // A page's secret is treated as expired this long before its expiresAt.
  skewSeconds: 10,
  // How long the Gateway may take to open the socket.
  openTimeoutMs: 15000,
});

export const STATE_EVENT = "gateway-realtime-state";
export const RETRYING_EVENT = "gateway-realtime-retrying";

// Secrets this page has already offered to the Gateway: never offer one twice.
const usedTokens = new Set();

/**
 * An Error with the setup endpoint's `status` and error `type`, whether
 * asking again could help (`fatal` false) and the Retry-After it sent.
 * Callable with or without `new`.
 */
export function GatewayRealtimeError(message, options = {}) {
  const error = new Error(message);
  error.name = "GatewayRealtimeError";
  error.status = options.status || null;
  error.type = options.type || null;
  error.fatal = Boolean(options.fatal);
  error.retryAfterMs = options.retryAfterMs != null ? options.retryAfterMs : null;
  Object.setPrototypeOf(error, GatewayRealtimeError.prototype);
  return error;
}
GatewayRealtimeError.prototype = Object.create(Error.prototype);
GatewayRealtimeError.prototype.constructor = GatewayRealtimeError;

function abortError(signal) {
  const error = GatewayRealtimeError("Connecting was aborted", { type: "aborted", fatal: true });
  error.cause = signal && signal.reason;
  return error;
}

/** The config block: an element, an element id, or the first block of `kind`. */
function findBlock(source, kind = "realtime") {
  if (source && typeof source === "object" && source.nodeType === 1) return source;
  if (typeof source === "string") return document.getElementById(source);
  return (
    document.getElementById(`gateway-realtime-${kind}`) ||
    document.querySelector(`script[type="application/json"][data-gateway-realtime="${kind}"]`)
  );
}

/** The block's JSON: {token, url, expiresAt, kind, protocols, refreshUrl, error, reason, element}. */
export function readConfig(source, kind) {
  const block = findBlock(source, kind);
  if (!block) throw GatewayRealtimeError("No gateway_realtime_config block found", { fatal: true });
  const config = JSON.parse(block.textContent || "{}");
  if (block.dataset.gatewayRealtimeUsed === "1" && config.token) usedTokens.add(config.token);
  config.element = block;
  return config;
}

/** Sec-WebSocket-Protocol values for `token`, in the contract's order. */
export function protocolsFor(config, token) {
  let base = (config.protocols || []).filter((protocol) => !protocol.startsWith(AUTH_PREFIX));
  if (!base.length) base = [`ai-gateway-${config.kind || "realtime"}.v1`];
  return [base[0], AUTH_PREFIX + token, ...base.slice(1)];
}

/** Whether `secret` expires within `skewSeconds` of `now` (ms). */
export function isExpired(secret, skewSeconds, now) {
  if (secret.expiresAt == null) return false;
  return secret.expiresAt * 1000 - skewSeconds * 1000 <= now;
}

/** A Retry-After header (seconds, or an HTTP date) in ms from `now`; null if absent or unreadable. */
function parseRetryAfter(value, now) {
  if (value == null) return null;
  const text = String(value).trim();
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  const date = Date.parse(text);
  return Number.isNaN(date) ? null : Math.max(0, date - now);
}

/**
 * How long to wait, in ms, after the `attempt`-th busy answer (1 for the
 * first): the longer of Retry-After and busyBackoffMs doubled per answer,
 * plus up to busyJitter of it at random, never over busyMaxBackoffMs and
 * never under Retry-After. Near the cap the jitter is taken off instead of
 * added, so pages stay spread out there too. `random` is Math.random.
 */
export function backoffDelay(attempt, retryAfterMs, options, random = Math.random) {
  const { busyBackoffMs, busyMaxBackoffMs, busyJitter } = { ...DEFAULTS, ...options };
  const floor = Math.max(0, retryAfterMs || 0);
  const cap = Math.max(busyMaxBackoffMs, floor);
  const delay = Math.min(cap, Math.max(floor, busyBackoffMs * 2 ** Math.max(0, attempt - 1)));
  const spread = delay * busyJitter;
  const low = Math.max(floor, Math.min(delay, cap - spread));
  return Math.round(Math.min(cap, low + random() * spread));
}

/** Resolve after `ms`; reject at once when `signal` aborts. */
function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal && signal.aborted) {
      reject(abortError(signal));
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(abortError(signal));
    };
    const timer = setTimeout(() => {
      if (signal) signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    if (signal) signal.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * One POST to the setup endpoint: {token, url, expiresAt?, tools?}. `body`
 * is sent as JSON (default {}), e.g. {model: "...", expiresAfterSeconds: 60}.
 * No waiting and no retry: mintSecret does that.
 */
export async function fetchSecret(setupUrl, body, fetchImpl, signal) {
  if (!setupUrl) throw GatewayRealtimeError("No setup URL to fetch a secret from", { fatal: true });
  const init = {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify(body || {}),
  };
  if (signal) init.signal = signal;
  let response;
  try {
    response = await (fetchImpl || globalThis.fetch.bind(globalThis))(setupUrl, init);
  } catch (error) {
    if (signal && signal.aborted) throw abortError(signal);
    throw error;
  }
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const error = (data && data.error) || {};
    const status = response.status;
    throw GatewayRealtimeError(error.message || `Failed to fetch a client secret: ${status}`, {
      status,
      type: error.type || null,
      // A 4xx other than 429 will not change by asking again.
      fatal: status >= 400 && status < 500 && status !== 429,
      retryAfterMs: parseRetryAfter(response.headers.get("Retry-After"), Date.now()),
    });
  }
  if (!data || typeof data.token !== "string" || !data.token || !/^wss?:\/\//.test(data.url || "")) {
    throw GatewayRealtimeError("Invalid client secret response", { status: response.status });
  }
  return data;
}

/**
 * A client secret from the setup endpoint, waiting out busy answers: the
 * app's one retry policy (see the top of this file).
 *
 * options: body, signal, fetch, onRetry(error, waitMs, attempt) before each
 * wait, onResume() after it, and DEFAULTS' busy* options.
 */
export async function mintSecret(setupUrl, options = {}) {
  const settings = { ...DEFAULTS, ...options };
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await fetchSecret(setupUrl, settings.body, settings.fetch, settings.signal);
    } catch (error) {
      const busy = (error.status === 503 || error.status === 429) && error.type !== "quota_exceeded";
      if (!busy) throw error;
      const tooLong = error.retryAfterMs != null && error.retryAfterMs > settings.busyMaxBackoffMs;
      if (tooLong || attempt >= settings.busyMaxAttempts) {
        error.fatal = true; // given up: nothing else retries it either
        throw error;
      }
      const wait = backoffDelay(attempt, error.retryAfterMs, settings);
      if (settings.onRetry) settings.onRetry(error, wait, attempt);
      await sleep(wait, settings.signal);
      if (settings.onResume) settings.onResume();
    }
  }
}

/** Open one WebSocket; resolve on "open", reject if it errors or closes first. */
function openSocket(url, protocols, options) {
  const { signal } = options;
  const WebSocketImpl = options.WebSocket || globalThis.WebSocket;
  return new Promise((resolve, reject) => {
    if (signal && signal.aborted) {
      reject(abortError(signal));
      return;
    }
    let socket;
    try {
      socket = new WebSocketImpl(url, protocols);
    } catch (error) {
      reject(error);
      return;
    }
    let settled = false;
    const settle = (error) => {
      if (settled) return false;
      settled = true;
      clearTimeout(timer);
      if (signal) signal.removeEventListener("abort", onAbort);
      if (error) reject(error);
      else resolve(socket);
      return true;
    };
    const giveUp = (error) => {
      if (!settle(error)) return;
      try {
        socket.close();
      } catch {
        // already closed
      }
    };
    const onAbort = () => giveUp(abortError(signal));
    const timer = setTimeout(
      () => giveUp(GatewayRealtimeError("The Gateway did not open the socket in time")),
      options.openTimeoutMs,
    );
    if (signal) signal.addEventListener("abort", onAbort, { once: true });
    socket.addEventListener("open", () => settle(null));
    socket.addEventListener("error", () => settle(GatewayRealtimeError("The Gateway refused the socket")));
    socket.addEventListener("close", (event) =>
      settle(GatewayRealtimeError(`The socket closed before opening (${event.code})`)),
    );
  });
}

/**
 * Connect to the Gateway with the page's secret or a fresh one.
 *
 * options: element | elementId | config, kind ("realtime"), refreshUrl
 * (default: the block's), body (JSON for refreshUrl), signal, eventTarget
 * (default: the block, else document), fetch, WebSocket, now (ms clock),
 * and DEFAULTS' options. Resolves to an open WebSocket (with
 * `socket.gatewayRealtime = {url, expiresAt, kind}`); rejects with a
 * GatewayRealtimeError.
 */
export async function connect(options = {}) {
  const settings = { ...DEFAULTS, ...options };
  const config =
    settings.config || readConfig(settings.element || settings.elementId, settings.kind);
  const refreshUrl = settings.refreshUrl || config.refreshUrl;
  const now = settings.now || Date.now;
  const { signal } = settings;
  const target = settings.eventTarget || config.element || document;

  const emit = (name, detail) => target.dispatchEvent(new CustomEvent(name, { detail, bubbles: true }));
  const setState = (state, error) => {
    if (config.element) config.element.dataset.gatewayRealtimeState = state;
    emit(STATE_EVENT, error ? { state, error } : { state });
  };
  const mint = () =>
    mintSecret(refreshUrl, {
      ...settings,
      onRetry: (error, wait, attempt) => {
        setState("busy");
        emit(RETRYING_EVENT, {
          attempt,
          retryInMs: wait,
          errorType: error.type,
          status: error.status,
          retryAfterMs: error.retryAfterMs,
        });
      },
      onResume: () => setState("connecting"),
    });
  const open = async (secret) => {
    // Single use: whatever happens next, it is never offered again.
    usedTokens.add(secret.token);
    if (config.element && secret.token === config.token) {
      config.element.dataset.gatewayRealtimeUsed = "1";
    }
    const socket = await openSocket(secret.url, protocolsFor(config, secret.token), settings);
    socket.gatewayRealtime = { url: secret.url, expiresAt: secret.expiresAt, kind: config.kind };
    return socket;
  };

  setState("connecting");
  try {
    const own = config.token
      ? { token: config.token, url: config.url, expiresAt: config.expiresAt }
      : null;
    const usable =
      own && own.url && !usedTokens.has(own.token) && !isExpired(own, settings.skewSeconds, now());
    let socket;
    if (usable) {
      try {
        socket = await open(own);
      } catch (error) {
        if (signal && signal.aborted) throw abortError(signal);
        // Spent or refused: one fresh secret, tried once.
        socket = await open(await mint());
      }
    } else {
      socket = await open(await mint());
    }
    setState("open");
    return socket;
  } catch (error) {
    setState("error", error);
    throw error;
  }
}

/**
 * The `api` option for the AI SDK's experimental_useRealtime: { token: <this
 * page's setup endpoint> }, from a path or the page's config block. The SDK
 * fetches its own secret there (it cannot take one injected into the page).
 */
export function aiSdkApi(source, kind) {
  const url =
    typeof source === "string" && source.startsWith("/") ? source : readConfig(source, kind).refreshUrl;
  if (!url) throw GatewayRealtimeError("No setup endpoint URL in the config block", { fatal: true });
  return { token: url };
}
