// What the three custom elements share: the `state` attribute, the
// `gateway-realtime-*` events, the max-seconds guard, the shadow root with
// its stylesheet and status line, the parts naming, and the microphone. No
// element mints while the page renders: each asks its setup endpoint (the
// `setup-url` attribute, written by the template tag) when the user presses
// its button, through gateway-realtime.mjs's one retry policy.
//
// Parts, the same in all three (style with ::part()):
//   controls     the row of buttons
//   button       every button, with its own name too: `button talk`,
//                `button mute`, `button hang-up` (voice), `button dictate`
//                (dictation), `button speak` (speech), `button stop`
//                (dictation, speech)
//   status       the status line (role="status")
//   log          the transcript (role="log", aria-live="polite"; voice, dictation)
//   transcript   one line of it, with data-role="user" or "assistant" and
//                data-state "streaming" or "done"
//   state        the state in words (voice)

/** The states every element's `state` attribute takes. */
export const STATES = Object.freeze(["idle", "connecting", "listening", "speaking", "error", "ended"]);

/** The events the elements dispatch; all bubble and cross shadow roots. */
export const EVENTS = Object.freeze({
  state: "gateway-realtime-state",
  error: "gateway-realtime-error",
  maxSeconds: "gateway-realtime-max-seconds",
});

const STYLESHEET = new URL("./elements.css", import.meta.url).href;
const DEFAULT_MAX_SECONDS = 300;

/** An Error with the `type` an element's `gateway-realtime-error` event reports. */
export function typedError(message, type, cause) {
  const error = new Error(message);
  error.type = type;
  if (cause) error.cause = cause;
  return error;
}

/**
 * Some of the AI SDK's messages run on with advice for developers: the
 * status line gets the first line, the event's detail.error.cause the whole
 * error.
 */
export function firstLine(error, fallbackType) {
  const message = (error && error.message) || String(error);
  const first = message.split("\n")[0];
  if (first === message) return error;
  return typedError(first, (error && error.type) || fallbackType, error);
}

/** A shadow-root node with `part` names (space-separated) and attributes. */
export function part(tag, names, attributes = {}) {
  const node = document.createElement(tag);
  node.setAttribute("part", names);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  return node;
}

/** A button with the parts `button <name>` and its text. */
export function button(name, text) {
  const node = part("button", `button ${name}`, { type: "button" });
  node.textContent = text;
  return node;
}

/** The microphone, or a typed error saying why not. */
export async function openMicrophone() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw typedError("This page cannot use a microphone (it needs HTTPS).", "microphone_unavailable");
  }
  try {
    return await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (cause) {
    const denied = cause && (cause.name === "NotAllowedError" || cause.name === "SecurityError");
    return Promise.reject(
      denied
        ? typedError("Microphone access was denied.", "microphone_denied", cause)
        : typedError("No microphone could be opened.", "microphone_unavailable", cause),
    );
  }
}

/** Stop every track of a stream (null is fine). */
export function stopStream(stream) {
  if (stream) stream.getTracks().forEach((track) => track.stop());
}

export class GatewayRealtimeElement extends HTMLElement {
  #guard = null;
  #status;

  constructor() {
    super();
    this.attachShadow({ mode: "open" });
    // A <link> to a static file, not inline CSS: works under a strict CSP.
    const link = document.createElement("link");
    link.rel = "stylesheet";
    link.href = STYLESHEET;
    this.#status = part("div", "status", { role: "status", "aria-live": "polite" });
    this.shadowRoot.append(link);
  }

  /** The status line, for the subclass to place in its shadow root. */
  get statusLine() {
    return this.#status;
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

  #dispatch(name, detail) {
    this.dispatchEvent(new CustomEvent(name, { detail, bubbles: true, composed: true }));
  }

  /** Set the `state` attribute and tell listeners (`gateway-realtime-state`). */
  setState(state) {
    if (!STATES.includes(state)) throw new Error(`unknown state ${state}`);
    if (this.getAttribute("state") === state) return;
    this.setAttribute("state", state);
    this.#dispatch(EVENTS.state, { state });
  }

  /**
   * Go to `error`, say why in the status line, and dispatch a
   * `gateway-realtime-error` event whose detail has the error's `type` (the
   * setup endpoint's error type, such as `quota_exceeded` or
   * `gateway_busy`, else a name of ours).
   */
  fail(error, fallbackType = "session_error") {
    this.clearGuard();
    const type = (error && error.type) || fallbackType;
    const message = (error && error.message) || String(error);
    this.setState("error");
    this.announce(message);
    this.#dispatch(EVENTS.error, { type, message, error });
  }

  /** Start the max-seconds guard; `onExpire` ends the session. */
  startGuard(onExpire) {
    this.clearGuard();
    const seconds = this.maxSeconds;
    this.#guard = setTimeout(() => {
      this.#guard = null;
      onExpire();
      this.announce(`Ended after ${seconds} seconds, the longest a session may last here.`);
      this.#dispatch(EVENTS.maxSeconds, { seconds });
    }, seconds * 1000);
  }

  clearGuard() {
    if (this.#guard !== null) clearTimeout(this.#guard);
    this.#guard = null;
  }

  /** Say `message` in the status line (an aria-live region). */
  announce(message) {
    this.#status.textContent = message;
  }
}
