// What the three custom elements share: the `state` attribute, the `error`
// event, the max-seconds guard, the shadow root with its stylesheet, the
// aria-live transcript and the busy/retrying note. No element mints while
// the page renders: each asks its setup endpoint (the `setup-url`
// attribute, written by the template tag) when the user presses its button.

/** The states every element's `state` attribute takes. */
export const STATES = Object.freeze(["idle", "connecting", "listening", "speaking", "error", "ended"]);

const STYLESHEET = new URL("./elements.css", import.meta.url).href;

/** An Error with the `type` an element's `error` event reports. */
export function typedError(message, type, cause) {
  const error = new Error(message);
  error.type = type;
  if (cause) error.cause = cause;
  return error;
}

/**
 * Some of the AI SDK's messages run on with advice for developers: the
 * status line gets the first line, the `error` event's detail.error.cause
 * the whole error.
 */
export function firstLine(error, fallbackType) {
  const message = (error && error.message) || String(error);
  const first = message.split("\n")[0];
  if (first === message) return error;
  return typedError(first, (error && error.type) || fallbackType, error);
}
const DEFAULT_MAX_SECONDS = 300;

export class GatewayRealtimeElement extends HTMLElement {
  constructor() {
    super();
    this.attachShadow({ mode: "open" });
    // A <link> to a static file, not inline CSS: works under a strict CSP.
    const link = document.createElement("link");
    link.rel = "stylesheet";
    link.href = STYLESHEET;
    this.shadowRoot.append(link);
    this._guard = null;
  }

  connectedCallback() {
    if (!this.hasAttribute("state")) this.setAttribute("state", "idle");
  }

  disconnectedCallback() {
    this.clearGuard();
  }

  /** The setup endpoint the tag wrote (`setup-url`). */
  get setupUrl() {
    return this.getAttribute("setup-url") || "";
  }

  /** `max-seconds`: how long a session may last before the element hangs up. */
  get maxSeconds() {
    const value = Number(this.getAttribute("max-seconds"));
    return Number.isFinite(value) && value > 0 ? value : DEFAULT_MAX_SECONDS;
  }

  get state() {
    return this.getAttribute("state") || "idle";
  }

  /** Set the `state` attribute and tell listeners (`gateway-realtime:state`). */
  setState(state) {
    if (!STATES.includes(state)) throw new Error(`unknown state ${state}`);
    if (this.getAttribute("state") === state) return;
    this.setAttribute("state", state);
    this.dispatchEvent(
      new CustomEvent("gateway-realtime:state", { detail: { state }, bubbles: true, composed: true }),
    );
  }

  /**
   * Go to `error`, say why in the status line, and dispatch an `error`
   * event whose detail has the error's `type` (the setup endpoint's error
   * type, such as `quota_exceeded` or `gateway_busy`, else a name of ours).
   */
  fail(error, fallbackType = "session_error") {
    this.clearGuard();
    const type = (error && error.type) || fallbackType;
    const message = (error && error.message) || String(error);
    this.setState("error");
    this.announce(message);
    this.dispatchEvent(
      new CustomEvent("error", { detail: { type, message, error }, bubbles: true, composed: true }),
    );
  }

  /** Start the max-seconds guard; `onExpire` ends the session. */
  startGuard(onExpire) {
    this.clearGuard();
    const seconds = this.maxSeconds;
    this._guard = setTimeout(() => {
      this._guard = null;
      onExpire();
      this.announce(`Ended after ${seconds} seconds, the longest a session may last here.`);
      this.dispatchEvent(
        new CustomEvent("gateway-realtime:max-seconds", {
          detail: { seconds },
          bubbles: true,
          composed: true,
        }),
      );
    }, seconds * 1000);
  }

  clearGuard() {
    if (this._guard !== null) clearTimeout(this._guard);
    this._guard = null;
  }

  /** The status line (an aria-live region in the element's shadow root). */
  announce(message) {
    const status = this.shadowRoot.querySelector('[part="status"]');
    if (status) status.textContent = message;
  }
}
