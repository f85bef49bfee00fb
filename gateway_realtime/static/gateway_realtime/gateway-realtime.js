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
 * at once (the user is logged out or not allowed).
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
  };
  // Secrets this page has already offered to the Gateway: never offer one twice.
  var usedTokens = new Set();

  function GatewayRealtimeError(message, options) {
    var error = new Error(message);
    error.name = "GatewayRealtimeError";
    error.status = (options && options.status) || null;
    error.type = (options && options.type) || null;
    error.fatal = Boolean(options && options.fatal);
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

  /**
   * POST refreshUrl for a new secret: {token, url, expiresAt?, tools?}.
   * `body` is sent as JSON (default {}); e.g. {model: "...", expiresAfterSeconds: 60}.
   */
  function fetchSecret(refreshUrl, body, fetchImpl) {
    if (!refreshUrl) {
      return Promise.reject(GatewayRealtimeError("No refreshUrl to fetch a secret from", { fatal: true }));
    }
    var doFetch = fetchImpl || root.fetch.bind(root);
    return doFetch(refreshUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(body || {}),
    }).then(function (response) {
      return response
        .json()
        .catch(function () {
          return null;
        })
        .then(function (data) {
          if (!response.ok) {
            var error = (data && data.error) || {};
            throw GatewayRealtimeError(error.message || "Failed to fetch a client secret: " + response.status, {
              status: response.status,
              type: error.type || null,
              fatal: response.status === 401 || response.status === 403,
            });
          }
          if (!data || typeof data.token !== "string" || !data.token || !/^wss?:\/\//.test(data.url || "")) {
            throw GatewayRealtimeError("Invalid client secret response", { status: response.status });
          }
          return data;
        });
    });
  }

  function sleep(ms) {
    return new Promise(function (resolve) {
      setTimeout(resolve, ms);
    });
  }

  /** Open one WebSocket; resolve on "open", reject if it errors or closes first. */
  function openSocket(url, protocols, options) {
    var WebSocketImpl = options.WebSocket || root.WebSocket;
    return new Promise(function (resolve, reject) {
      var settled = false;
      var socket;
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
      function fail(error) {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        reject(error);
      }
      socket.addEventListener("open", function () {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
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
   * backoffMs, maxBackoffMs, skewSeconds, openTimeoutMs, fetch, WebSocket,
   * now (ms clock), onRetry(error, attempt).
   * Resolves to an open WebSocket; rejects with a GatewayRealtimeError.
   */
  function connect(options) {
    options = Object.assign({}, DEFAULTS, options || {});
    var config = options.config || readConfig(options.element || options.elementId, options.kind);
    var refreshUrl = options.refreshUrl || config.refreshUrl;
    var now = options.now || Date.now;
    var secret = config.token ? { token: config.token, url: config.url, expiresAt: config.expiresAt } : null;
    if (secret && (usedTokens.has(secret.token) || isExpired(secret, options.skewSeconds, now()))) {
      secret = null; // spent or stale: do not even offer it
    }
    var attempt = 0;

    function markUsed(token) {
      usedTokens.add(token);
      if (config.element && config.element.dataset && token === config.token) {
        config.element.dataset.gatewayRealtimeUsed = "1";
      }
    }

    function retry(error) {
      if (error && error.fatal) throw error;
      attempt += 1;
      if (attempt >= options.maxAttempts) throw error;
      if (options.onRetry) options.onRetry(error, attempt);
      var delay = Math.min(options.backoffMs * Math.pow(2, attempt - 1), options.maxBackoffMs);
      return sleep(delay).then(step);
    }

    function step() {
      var ready = isUsable(secret)
        ? Promise.resolve(secret)
        : fetchSecret(refreshUrl, options.body, options.fetch);
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

    return step();
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
    aiSdkApi: aiSdkApi,
    GatewayRealtimeError: GatewayRealtimeError,
    DEFAULTS: DEFAULTS,
  };
})(typeof globalThis !== "undefined" ? globalThis : window);
