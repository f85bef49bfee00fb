/*
 * django-gateway-realtime browser helper. No build step, no dependencies.
 *
 * Plain script:  <script src="{% static 'gateway_realtime/gateway-realtime.js' %}"></script>
 *                then window.GatewayRealtime.connect()
 * ES module:     import { connect } from "/static/gateway_realtime/gateway-realtime.mjs";
 *                (the .mjs twin imports this file and re-exports its API)
 *
 * This file is valid both as a classic script and as a module body: it
 * touches no top-level `this`, declares nothing global by accident, and
 * publishes its API on globalThis.GatewayRealtime only.
 *
 * It reads the JSON block written by {% gateway_realtime_config %} and opens
 * the Gateway WebSocket with the contract's subprotocols:
 *   [marker ("ai-gateway-realtime.v1"...), "ai-gateway-auth.<token>", team?]
 * A client secret is single-use and short-lived, so before connecting it
 * fetches a new one from the block's refreshUrl (same-origin POST, JSON "{}")
 * when the page's secret is missing, expired (with a clock skew margin),
 * already used, or rejected by the Gateway (the socket fails before "open").
 * Retries are bounded, with exponential backoff; 401/403 from refreshUrl stop
 * at once (the user is logged out or not allowed), and so does any other 4xx
 * but 429.
 *
 * A 503 or 429 from refreshUrl means "busy, come back later": the helper
 * waits (Retry-After when sent, exponential backoff with jitter, each wait
 * capped) and asks again, up to busyMaxAttempts requests. While it waits the
 * state is "busy" and a "gateway-realtime:retrying" event says for how long.
 * An AbortSignal (options.signal) stops it at any point.
 */
(function (root) {
  "use strict";

  var AUTH_PREFIX = "ai-gateway-auth.";
  var DEFAULTS = {
    maxAttempts: 4, // WebSocket attempts in total, the page's own secret included
    backoffMs: 250, // doubled after every failed attempt
    maxBackoffMs: 4000,
    skewSeconds: 10, // treat a secret as expired this long before expiresAt
    openTimeoutMs: 15000,
    // A busy setup endpoint (503 or 429): requests to it in all, before giving up,
    busyMaxAttempts: 5,
    // the first wait when it sends no Retry-After (doubled per busy answer),
    busyBackoffMs: 1000,
    // the longest wait (a Retry-After beyond it gives up at once),
    busyMaxBackoffMs: 30000,
    // and up to this fraction of the wait added at random, so that a crowd of
    // pages turned away together does not come back together.
    busyJitter: 0.5,
  };
  var STATE_EVENT = "gateway-realtime:state";
  var RETRYING_EVENT = "gateway-realtime:retrying";
  // Secrets this page has already offered to the Gateway: never offer one twice.
  var usedTokens = new Set();

  function GatewayRealtimeError(message, options) {
    var error = new Error(message);
    error.name = "GatewayRealtimeError";
    error.status = (options && options.status) || null;
    error.type = (options && options.type) || null;
    error.fatal = Boolean(options && options.fatal);
    error.retryAfterMs = options && options.retryAfterMs != null ? options.retryAfterMs : null;
    Object.setPrototypeOf(error, GatewayRealtimeError.prototype);
    return error;
  }
  GatewayRealtimeError.prototype = Object.create(Error.prototype);
  GatewayRealtimeError.prototype.constructor = GatewayRealtimeError;

  function defaultElementId(kind) {
    return "gateway-realtime-" + (kind || "realtime");
  }

  /** The config block: an element, an element id, or the first block of `kind`. */
  function findBlock(source, kind) {
    if (typeof document === "undefined") return null;
    if (source && typeof source === "object" && source.nodeType === 1) return source;
    if (typeof source === "string") return document.getElementById(source);
    return (
      document.getElementById(defaultElementId(kind)) ||
      document.querySelector(
        'script[type="application/json"][data-gateway-realtime="' + (kind || "realtime") + '"]'
      )
    );
  }

  /** Parse the block into {token, url, expiresAt, kind, protocols, refreshUrl, error, reason}. */
  function readConfig(source, kind) {
    var block = findBlock(source, kind);
    if (!block) throw GatewayRealtimeError("No gateway_realtime_config block found", { fatal: true });
    var config = JSON.parse(block.textContent || "{}");
    if (block.dataset && block.dataset.gatewayRealtimeUsed === "1" && config.token) {
      usedTokens.add(config.token);
    }
    config.element = block;
    return config;
  }

  /** The non-auth subprotocols of a config: the kind's marker, then the team if any. */
  function baseProtocols(config) {
    var protocols = (config.protocols || []).filter(function (p) {
      return p.indexOf(AUTH_PREFIX) !== 0;
    });
    if (!protocols.length) protocols = ["ai-gateway-" + (config.kind || "realtime") + ".v1"];
    return protocols;
  }

  /** Sec-WebSocket-Protocol values for `token`, in the contract's order. */
  function protocolsFor(config, token) {
    var base = baseProtocols(config);
    return [base[0], AUTH_PREFIX + token].concat(base.slice(1));
  }

  function isExpired(secret, skewSeconds, now) {
    if (secret.expiresAt == null) return false;
    return secret.expiresAt * 1000 - skewSeconds * 1000 <= now;
  }

  function isUsable(secret) {
    return Boolean(secret && typeof secret.token === "string" && secret.token && secret.url);
  }

  /** An answer that says "busy, come back later". */
  function isBusy(status) {
    return status === 503 || status === 429;
  }

  /** A Retry-After header (seconds, or an HTTP date) in ms from `now`; null if absent or unreadable. */
  function parseRetryAfter(value, now) {
    if (value == null) return null;
    value = String(value).trim();
    if (/^\d+$/.test(value)) return Number(value) * 1000;
    var date = Date.parse(value);
    if (isNaN(date)) return null;
    return Math.max(0, date - now);
  }

  /**
   * How long to wait, in ms, after the `attempt`-th busy answer (1 for the
   * first): the longer of Retry-After and busyBackoffMs doubled per answer,
   * plus up to busyJitter of it at random, never over busyMaxBackoffMs and
   * never under Retry-After. Near the cap the jitter is taken off instead
   * of added, so pages stay spread out there too. `random` is Math.random.
   * (A Retry-After over the cap is not waited for: connect() gives up.)
   */
  function backoffDelay(attempt, retryAfterMs, options, random) {
    options = Object.assign({}, DEFAULTS, options || {});
    random = random || Math.random;
    var floor = Math.max(0, retryAfterMs || 0);
    var cap = Math.max(options.busyMaxBackoffMs, floor);
    var delay = Math.max(floor, options.busyBackoffMs * Math.pow(2, Math.max(0, attempt - 1)));
    delay = Math.min(delay, cap);
    var spread = delay * options.busyJitter;
    var low = Math.max(floor, Math.min(delay, cap - spread));
    return Math.round(Math.min(cap, low + random() * spread));
  }

  function abortError(signal) {
    var error = GatewayRealtimeError("Connecting was aborted", { type: "aborted", fatal: true });
    error.cause = signal && signal.reason;
    return error;
  }

  /**
   * POST refreshUrl for a new secret: {token, url, expiresAt?, tools?}.
   * `body` is sent as JSON (default {}); e.g. {model: "...", expiresAfterSeconds: 60}.
   * `signal` (an AbortSignal) cancels the request.
   */
  function fetchSecret(refreshUrl, body, fetchImpl, signal) {
    if (!refreshUrl) {
      return Promise.reject(GatewayRealtimeError("No refreshUrl to fetch a secret from", { fatal: true }));
    }
    var doFetch = fetchImpl || root.fetch.bind(root);
    var init = {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(body || {}),
    };
    if (signal) init.signal = signal;
    return doFetch(refreshUrl, init).then(function (response) {
      return response
        .json()
        .catch(function () {
          return null;
        })
        .then(function (data) {
          if (!response.ok) {
            var error = (data && data.error) || {};
            var status = response.status;
            var retryAfter = response.headers ? response.headers.get("Retry-After") : null;
            throw GatewayRealtimeError(error.message || "Failed to fetch a client secret: " + status, {
              status: status,
              type: error.type || null,
              // A 4xx other than 429 will not change by asking again.
              fatal: status >= 400 && status < 500 && status !== 429,
              retryAfterMs: parseRetryAfter(retryAfter, Date.now()),
            });
          }
          if (!data || typeof data.token !== "string" || !data.token || !/^wss?:\/\//.test(data.url || "")) {
            throw GatewayRealtimeError("Invalid client secret response", { status: response.status });
          }
          return data;
        });
    }, function (error) {
      if (signal && signal.aborted) throw abortError(signal);
      throw error;
    });
  }

  /** Resolve after `ms`; reject at once when `signal` aborts. */
  function sleep(ms, signal) {
    return new Promise(function (resolve, reject) {
      if (signal && signal.aborted) {
        reject(abortError(signal));
        return;
      }
      function onAbort() {
        clearTimeout(timer);
        reject(abortError(signal));
      }
      var timer = setTimeout(function () {
        if (signal) signal.removeEventListener("abort", onAbort);
        resolve();
      }, ms);
      if (signal) signal.addEventListener("abort", onAbort, { once: true });
    });
  }

  /** Open one WebSocket; resolve on "open", reject if it errors or closes first. */
  function openSocket(url, protocols, options) {
    var WebSocketImpl = options.WebSocket || root.WebSocket;
    return new Promise(function (resolve, reject) {
      var settled = false;
      var socket;
      if (options.signal && options.signal.aborted) {
        reject(abortError(options.signal));
        return;
      }
      try {
        socket = new WebSocketImpl(url, protocols);
      } catch (err) {
        reject(err);
        return;
      }
      var timer = setTimeout(function () {
        fail(GatewayRealtimeError("The Gateway did not open the socket in time"));
        try {
          socket.close();
        } catch (ignored) {
          /* already closed */
        }
      }, options.openTimeoutMs);
      var signal = options.signal;
      function onAbort() {
        fail(abortError(signal));
        try {
          socket.close();
        } catch (ignored) {
          /* already closed */
        }
      }
      if (signal) signal.addEventListener("abort", onAbort, { once: true });
      function fail(error) {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (signal) signal.removeEventListener("abort", onAbort);
        reject(error);
      }
      socket.addEventListener("open", function () {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (signal) signal.removeEventListener("abort", onAbort);
        resolve(socket);
      });
      socket.addEventListener("error", function () {
        fail(GatewayRealtimeError("The Gateway refused the socket"));
      });
      socket.addEventListener("close", function (event) {
        fail(GatewayRealtimeError("The socket closed before opening (" + event.code + ")"));
      });
    });
  }

  /**
   * Connect to the Gateway with the page's secret or a fresh one.
   *
   * options: element | elementId | config, kind ("realtime"), refreshUrl
   * (default: the block's), body (JSON for refreshUrl), maxAttempts,
   * backoffMs, maxBackoffMs, skewSeconds, openTimeoutMs, busyMaxAttempts,
   * busyBackoffMs, busyMaxBackoffMs, busyJitter, signal (AbortSignal),
   * eventTarget (default: the block, else document), fetch, WebSocket,
   * now (ms clock), onRetry(error, attempt).
   * Resolves to an open WebSocket; rejects with a GatewayRealtimeError.
   *
   * The block's data-gateway-realtime-state follows the attempt:
   * "connecting", "busy" (waiting on a busy setup endpoint), then "open" or
   * "error"; each change is a "gateway-realtime:state" event ({state, error?})
   * on eventTarget, and each busy wait starts with a "gateway-realtime:retrying"
   * event ({attempt, retryInMs, errorType, status, retryAfterMs}). Both bubble.
   */
  function connect(options) {
    options = Object.assign({}, DEFAULTS, options || {});
    var config = options.config || readConfig(options.element || options.elementId, options.kind);
    var refreshUrl = options.refreshUrl || config.refreshUrl;
    var now = options.now || Date.now;
    var signal = options.signal || null;
    var target = options.eventTarget || config.element || (typeof document !== "undefined" ? document : null);
    var secret = config.token ? { token: config.token, url: config.url, expiresAt: config.expiresAt } : null;
    if (secret && (usedTokens.has(secret.token) || isExpired(secret, options.skewSeconds, now()))) {
      secret = null; // spent or stale: do not even offer it
    }
    var attempt = 0;
    var busy = 0; // busy answers from refreshUrl so far

    function emit(name, detail) {
      if (!target || typeof target.dispatchEvent !== "function" || typeof CustomEvent !== "function") return;
      target.dispatchEvent(new CustomEvent(name, { detail: detail, bubbles: true }));
    }

    function setState(state, error) {
      if (config.element && config.element.dataset) config.element.dataset.gatewayRealtimeState = state;
      emit(STATE_EVENT, error ? { state: state, error: error } : { state: state });
    }

    /** A fresh secret from refreshUrl, waiting and asking again while it is busy. */
    function fetchFresh() {
      return fetchSecret(refreshUrl, options.body, options.fetch, signal).catch(function (error) {
        if (!isBusy(error.status)) throw error;
        busy += 1;
        var retryAfterMs = error.retryAfterMs;
        var tooLong = retryAfterMs != null && retryAfterMs > options.busyMaxBackoffMs;
        if (busy >= options.busyMaxAttempts || tooLong) {
          error.fatal = true; // given up: no other retry either
          throw error;
        }
        var wait = backoffDelay(busy, retryAfterMs, options);
        setState("busy");
        emit(RETRYING_EVENT, {
          attempt: busy,
          retryInMs: wait,
          errorType: error.type,
          status: error.status,
          retryAfterMs: retryAfterMs,
        });
        return sleep(wait, signal).then(function () {
          setState("connecting");
          return fetchFresh();
        });
      });
    }

    function markUsed(token) {
      usedTokens.add(token);
      if (config.element && config.element.dataset && token === config.token) {
        config.element.dataset.gatewayRealtimeUsed = "1";
      }
    }

    function retry(error) {
      if (signal && signal.aborted) throw abortError(signal);
      if (error && error.fatal) throw error;
      attempt += 1;
      if (attempt >= options.maxAttempts) throw error;
      if (options.onRetry) options.onRetry(error, attempt);
      var delay = Math.min(options.backoffMs * Math.pow(2, attempt - 1), options.maxBackoffMs);
      return sleep(delay, signal).then(step);
    }

    function step() {
      if (signal && signal.aborted) return Promise.reject(abortError(signal));
      var ready = isUsable(secret) ? Promise.resolve(secret) : fetchFresh();
      return ready.then(
        function (current) {
          secret = null; // single use: whatever happens next, never offer it again
          markUsed(current.token);
          return openSocket(current.url, protocolsFor(config, current.token), options).then(
            function (socket) {
              socket.gatewayRealtime = { url: current.url, expiresAt: current.expiresAt, kind: config.kind };
              return socket;
            },
            retry
          );
        },
        retry
      );
    }

    setState("connecting");
    return step().then(
      function (socket) {
        setState("open");
        return socket;
      },
      function (error) {
        setState("error", error);
        throw error;
      }
    );
  }

  /**
   * The `api` option for the AI SDK's experimental_useRealtime / realtime
   * session: { token: <this page's setup endpoint> }. The SDK fetches its own
   * secret there (it cannot take one injected into the page).
   */
  function aiSdkApi(source, kind) {
    var url;
    if (typeof source === "string" && source.charAt(0) === "/") url = source;
    else url = readConfig(source, kind).refreshUrl;
    if (!url) throw GatewayRealtimeError("No setup endpoint URL in the config block", { fatal: true });
    return { token: url };
  }

  root.GatewayRealtime = {
    version: "1",
    connect: connect,
    readConfig: readConfig,
    fetchSecret: fetchSecret,
    protocolsFor: protocolsFor,
    isExpired: isExpired,
    backoffDelay: backoffDelay,
    aiSdkApi: aiSdkApi,
    GatewayRealtimeError: GatewayRealtimeError,
    DEFAULTS: DEFAULTS,
  };
})(typeof globalThis !== "undefined" ? globalThis : window);
