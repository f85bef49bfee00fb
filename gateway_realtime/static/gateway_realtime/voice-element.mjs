// <gateway-realtime-voice>: a spoken conversation with the AI Gateway's
// realtime model, on the AI SDK's own realtime session (sdk.mjs VoiceSession).
//
//   {% load gateway_realtime %}{% gateway_realtime_voice max_seconds=120 %}
//
// Pressing talk asks for the microphone, then for a client secret from the
// setup endpoint (`setup-url`; rendering the page minted nothing), opens the
// session and starts capture. Every press mints a new secret.
//
// Relay mode (docs/relay.md): with a `relay-url` attribute (the tag's
// `relay=True`) the session goes through the site's own WebSocket relay
// instead: no setup request, no secret in the page, the session cookie
// authenticates it, and the site can end it (limits, revocation). A relay's
// close reason is shown in the status line and typed in the `error` event.
//
// Live models (openai/gpt-live-1, or any model the server routes to Live;
// wire contract section 8) are one continuous conversation: the element
// sends only the audio format and voice, streams the microphone from the
// Gateway's `session-started` on, shows both sides' words from
// `transcript-fragment` events, mutes with the Live protocol's
// `input-audio-mute` / `input-audio-unmute`, and hangs up with
// `session-close` (the Gateway answers with the session's final usage).
// States, events and parts are the same as for a realtime model.
//
// Attributes (the template tag writes the first four):
//   setup-url    the realtime setup endpoint
//   relay-url    the relay's route (a path such as /ws/gateway-realtime/realtime/
//                or a ws(s):// URL); when present, setup-url is not used
//   model        the model id the element asks the endpoint (or the relay) for
//   api          "live" or "realtime": the route the server mints `model` on
//   max-seconds  the longest a session may last; then the element hangs up
//                and says so (state `ended`)
//   label        the talk button's text (default "Talk")
//   voice        the assistant's voice, passed to the session
//   lang         a language hint for the transcription of what the user says
//                (realtime models; Live models take no such setting)
// Set by the element: `state` (idle, connecting, listening, speaking, error,
// ended), `muted` while the microphone is off, `playing` while the
// assistant's audio plays.
//
// Events (all bubble out of the shadow root):
//   gateway-realtime-state        detail {state}, on every state change
//   gateway-realtime-error        detail {type, message, error}; type is the
//                                 setup endpoint's error type (quota_exceeded,
//                                 gateway_busy, forbidden...),
//                                 microphone_denied, microphone_unavailable,
//                                 setup_failed or session_error; relayed:
//                                 not_authenticated, forbidden, not_found,
//                                 too_many_sessions, quota_exceeded,
//                                 budget_exceeded, fell_behind, gateway_unavailable,
//                                 gateway_error, limits_unavailable (a relay that ends a session
//                                 for its length or by revocation: state `ended`)
//   gateway-realtime-max-seconds  detail {seconds}, when the guard hung up
//
// Methods: start(), hangUp(), mute(on = true); `session` is the AI SDK
// session of the current call.
//
// Parts (element-base.mjs names them for all three elements): controls,
// `button talk`, `button mute` (aria-pressed), `button hang-up`, state (the
// state in words), status (why it ended, what went wrong, busy waits),
// log (the transcript) and transcript (one line of it).
// Custom properties: see elements.css.
import {
  GatewayRealtimeElement,
  button,
  openMicrophone,
  part,
  stopStream,
} from "./element-base.mjs";
import { GatewayRealtimeError, PCM_RATE, VoiceSession, isLiveModel, socketClose } from "./sdk.mjs";

const STATE_TEXT = {
  idle: "Ready",
  connecting: "Connecting…",
  listening: "Listening",
  speaking: "Speaking",
  error: "Error",
  ended: "Ended",
};
/** Relay close codes (docs/relay.md) that end a call as `ended`, not `error`. */
const RELAY_ENDED = new Set([4408, 4410]);
/** The `error` type of each relay refusal; 4429 is typed by its reason. */
const RELAY_ERROR_TYPES = {
  1007: "unreadable_frame",
  1009: "frame_too_large",
  1011: "gateway_error",
  1012: "server_restarting",
  4401: "not_authenticated",
  4403: "forbidden",
  4404: "not_found",
  4413: "fell_behind",
  4429: "too_many_requests",
};

/** How long a failed relayed session waits for its socket's close, to say why. */
const CLOSE_WAIT_MS = 1000;

/** A relay's close ({code, reason}) as the element reports it: {ended, type, message}, or null. */
function relayOutcome(close) {
  if (!close || (close.code < 4000 && !(close.code in RELAY_ERROR_TYPES))) return null;
  const message = close.reason
    ? `${close.reason.charAt(0).toUpperCase()}${close.reason.slice(1)}.`
    : `The relay closed the session (code ${close.code}).`;
  if (RELAY_ENDED.has(close.code)) return { ended: true, message };
  let type = RELAY_ERROR_TYPES[close.code] || "session_error";
  // 4429 and 1011 say which limit or failure in their reason.
  const named = (close.code === 4429 || close.code === 1011) && /^[a-z ]+$/.test(close.reason);
  if (named) type = close.reason.replaceAll(" ", "_");
  return { ended: false, type, message };
}

/** States in which a session exists (or is being set up). */
const ACTIVE = new Set(["connecting", "listening", "speaking"]);

/** The text of a message's text parts. */
function messageText(message) {
  return (message.parts || [])
    .filter((part) => part.type === "text" && typeof part.text === "string")
    .map((part) => part.text.trim())
    .filter(Boolean)
    .join(" ");
}

export class GatewayRealtimeVoiceElement extends GatewayRealtimeElement {
  #hangUpButton;
  #lastError;
  #lines;
  #liveLine;
  #log;
  #logStart;
  #muteButton;
  #muted;
  #playing;
  #responding;
  #run;
  #session;
  #stateText;
  #stream;
  #talkButton;

  static get observedAttributes() {
    return ["state", "label"];
  }

  constructor() {
    super();
    const controls = part("div", "controls");
    this.#talkButton = button("talk", "Talk");
    this.#muteButton = button("mute", "Mute");
    this.#muteButton.setAttribute("aria-pressed", "false");
    this.#hangUpButton = button("hang-up", "Hang up");
    controls.append(this.#talkButton, this.#muteButton, this.#hangUpButton);
    this.#stateText = part("span", "state");
    this.#log = part("div", "log", {
      role: "log",
      "aria-live": "polite",
      "aria-label": "Transcript",
      tabindex: "0",
    });
    this.shadowRoot.append(controls, this.#stateText, this.statusLine, this.#log);

    this.#talkButton.addEventListener("click", () => this.start());
    this.#muteButton.addEventListener("click", () => this.mute(!this.#muted));
    this.#hangUpButton.addEventListener("click", () => this.hangUp());

    this.#run = 0; // bumped by every start and every end: late callbacks check it
    this.#session = null;
    this.#stream = null; // the microphone until the session takes it over
    this.#muted = false;
    this.#responding = false;
    this.#playing = false;
    this.#lastError = null;
    this.#lines = new Map();
    this.#logStart = 0;
    this.#liveLine = null; // a Live session's line being written
    this.#sync();
  }

  connectedCallback() {
    super.connectedCallback();
    this.#sync();
  }

  disconnectedCallback() {
    super.disconnectedCallback();
    if (ACTIVE.has(this.state)) this.#end("");
  }

  attributeChangedCallback() {
    this.#sync();
  }

  /** Whether `model` is a Live model (continuous; the `api` attribute or the AI SDK's list). */
  get live() {
    return isLiveModel(this.getAttribute("model") || "", this.getAttribute("api") || undefined);
  }

  /** The session options the element asks for: audio both ways, server VAD (Live: its own). */
  get sessionConfig() {
    const voice = this.getAttribute("voice");
    if (this.live) {
      // Only what a Live session-start takes; one PCM format both ways.
      const format = { type: "audio/pcm", rate: PCM_RATE };
      const live = { inputAudioFormat: format, outputAudioFormat: { ...format } };
      if (voice) live.voice = voice;
      return live;
    }
    const config = {
      outputModalities: ["audio"],
      inputAudioFormat: { type: "audio/pcm", rate: PCM_RATE },
      outputAudioFormat: { type: "audio/pcm", rate: PCM_RATE },
      inputAudioTranscription: {},
      outputAudioTranscription: {},
      turnDetection: { type: "server-vad" },
    };
    if (voice) config.voice = voice;
    const lang = (this.getAttribute("lang") || "").split("-")[0];
    if (lang) config.inputAudioTranscription.language = lang.toLowerCase();
    return config;
  }

  /** `relay-url`: the site's relay route; when set, the call is relayed. */
  get relayUrl() {
    return this.getAttribute("relay-url") || "";
  }

  /** The AI SDK session of the current call, or null. */
  get session() {
    return this.#session;
  }

  get muted() {
    return this.#muted;
  }

  /** Start a call: microphone, a fresh secret, the session, capture. */
  async start() {
    if (ACTIVE.has(this.state)) return;
    const run = ++this.#run;
    this.#reset();
    this.#lines = new Map();
    this.#logStart = this.#log.children.length;
    this.#liveLine = null;
    this.announce("");
    this.setState("connecting");

    let stream;
    try {
      stream = await openMicrophone();
    } catch (error) {
      if (run === this.#run) this.fail(error, "microphone_unavailable");
      return;
    }
    if (run !== this.#run) {
      stopStream(stream); // hung up while the browser asked
      return;
    }
    this.#stream = stream;

    let session;
    try {
      const relayUrl = this.relayUrl;
      session = new VoiceSession({
        ...(relayUrl ? { relayUrl } : { setupUrl: this.setupUrl }),
        model: this.getAttribute("model") || "",
        api: this.getAttribute("api") || undefined,
        sessionConfig: this.sessionConfig,
        onChange: (key, value) => this.#onChange(session, key, value),
        onEvent: (event) => this.#onEvent(session, event),
        onError: (error) => {
          if (session === this.#session) this.#lastError = error;
        },
        onRetry: (error, ms) => {
          if (session === this.#session) {
            this.announce(`The server is busy; trying again in ${Math.ceil(ms / 1000)} s.`);
          }
        },
      });
      this.#session = session;
      // A Live session starts capture itself, from this stream, once started.
      await session.connect(session.live ? { stream } : undefined);
    } catch (error) {
      if (run === this.#run) this.#abort(error, "setup_failed");
    }
  }

  /** End the call (or the attempt to start one) and release the microphone. */
  hangUp() {
    if (!ACTIVE.has(this.state)) return;
    this.#end("Call ended.");
  }

  /** Turn the microphone off (`on` true) or back on; the session stays open. */
  async mute(on = true) {
    const muted = Boolean(on);
    const session = this.#session;
    if (!session || session.state.status !== "connected" || muted === this.#muted) return;
    this.#setMuted(muted);
    if (muted) {
      session.stopAudioCapture(); // the SDK stops the tracks it owns: the mic is released
      if (session.live) {
        this.#release(); // a Live session's stream is the element's own
        this.#command(session, "input-audio-mute");
      }
      return;
    }
    let stream;
    try {
      stream = await openMicrophone();
    } catch (error) {
      if (session === this.#session) this.#abort(error, "microphone_unavailable");
      return;
    }
    if (session !== this.#session || this.#muted) {
      stopStream(stream);
      return;
    }
    if (session.live) this.#stream = stream;
    session.startAudioCapture(stream);
    if (session.live) this.#command(session, "input-audio-unmute");
  }

  /** Send a Live command; a failure is the session's (reported through onError). */
  #command(session, type) {
    try {
      Promise.resolve(session.sendEvent({ type })).catch(() => {});
    } catch {
      // The session is closing: nothing left to tell the Gateway.
    }
  }

  // Session callbacks -------------------------------------------------------

  #onChange(session, key, value) {
    if (session !== this.#session) return;
    if (key === "status") {
      if (value === "connected" && this.state === "connecting") this.#connected(session);
      else if (value === "error") queueMicrotask(() => this.#failed(session));
      else if (value === "disconnected" && ACTIVE.has(this.state)) this.#end("The call ended.");
    } else if (key === "messages") {
      this.#render(value);
    } else if (key === "isPlaying") {
      this.#playing = Boolean(value);
      this.toggleAttribute("playing", this.#playing);
      this.#speaking();
    }
  }

  #onEvent(session, event) {
    if (session !== this.#session) return;
    if (event.type === "transcript-fragment") {
      this.#fragment(event);
      return;
    }
    if (event.type === "response-created") this.#responding = true;
    else if (event.type === "response-done") this.#responding = false;
    else return;
    this.#speaking();
  }

  #connected(session) {
    if (session.live) {
      // The AI SDK starts capture on session-started, from the stream given
      // to connect(); the stream stays the element's, released at the end.
      this.setState("listening");
      this.startGuard(() => this.#end(""));
      return;
    }
    const stream = this.#stream;
    this.#stream = null; // the SDK owns it now and stops it when capture stops
    try {
      session.startAudioCapture(stream);
    } catch (error) {
      stopStream(stream);
      this.#abort(error, "session_error");
      return;
    }
    this.setState("listening");
    this.startGuard(() => this.#end(""));
  }

  async #failed(session) {
    if (session !== this.#session) return;
    const error = this.#lastError || new Error("The voice session failed.");
    let relayed = null;
    if (session.relayUrl) {
      // The relay says why in its close; the error the SDK reported first
      // may be another one (a microphone frame sent as the socket closed).
      const close =
        socketClose(error) ||
        (await Promise.race([
          session.socketClosed,
          new Promise((resolve) => setTimeout(() => resolve(null), CLOSE_WAIT_MS)),
        ]));
      if (session !== this.#session) return;
      relayed = relayOutcome(close);
    }
    if (relayed && relayed.ended) {
      this.#end(relayed.message);
    } else if (relayed) {
      const typed = GatewayRealtimeError(relayed.message, { type: relayed.type, fatal: true });
      typed.cause = error;
      this.#abort(typed, relayed.type);
    } else {
      this.#abort(error, "session_error");
    }
  }

  /** Speaking while a response is under way or its audio plays. */
  #speaking() {
    if (this.state !== "listening" && this.state !== "speaking") return;
    this.setState(this.#responding || this.#playing ? "speaking" : "listening");
  }

  // Helpers -----------------------------------------------------------------

  /** Hang up: state `ended`, `message` in the status line. */
  #end(message) {
    this.#teardown();
    this.setState("ended");
    this.announce(message);
  }

  /** Give up on the call: state `error` and an `error` event. */
  #abort(error, fallbackType) {
    this.#teardown();
    this.fail(error, fallbackType);
  }

  #teardown() {
    const session = this.#session;
    this.#session = null;
    this.#run += 1;
    this.clearGuard();
    if (session && session.live && session.state.status === "connected") {
      // Live: session-close, so the Gateway ends the session with its final
      // usage; the AI SDK disconnects once it answers (or after its timeout).
      session.close().catch(() => session.disconnect());
    } else if (session) {
      session.disconnect(); // closes the socket, stops capture and playback
    }
    if (this.#liveLine) this.#liveLine.dataset.state = "done";
    this.#liveLine = null;
    this.#release();
    this.#reset();
  }

  #release() {
    stopStream(this.#stream);
    this.#stream = null;
  }

  #reset() {
    this.#responding = false;
    this.#playing = false;
    this.#lastError = null;
    this.removeAttribute("playing");
    this.#setMuted(false);
  }

  #setMuted(muted) {
    this.#muted = muted;
    this.toggleAttribute("muted", muted);
    this.#muteButton.setAttribute("aria-pressed", String(muted));
    this.#muteButton.textContent = muted ? "Unmute" : "Mute";
  }

  /** A Live `transcript-fragment`: words of one side, added to that side's current line. */
  #fragment(event) {
    if (typeof event.delta !== "string" || !event.delta) return;
    const role = event.speaker === "user" ? "user" : "assistant";
    let line = this.#liveLine;
    if (!line || line.dataset.role !== role) {
      if (line) line.dataset.state = "done";
      line = part("p", "transcript");
      line.dataset.role = role;
      line.dataset.state = "streaming";
      this.#log.append(line);
      this.#liveLine = line;
    }
    line.textContent += event.delta;
    this.#log.scrollTop = this.#log.scrollHeight;
  }

  /** Put the session's user and assistant messages in the log, in order. */
  #render(messages) {
    let index = this.#logStart;
    for (const message of messages || []) {
      if (message.role !== "user" && message.role !== "assistant") continue;
      const text = messageText(message);
      if (!text) continue;
      let line = this.#lines.get(message.id);
      if (!line) {
        line = part("p", "transcript");
        line.dataset.role = message.role;
        this.#lines.set(message.id, line);
      }
      if (line.textContent !== text) line.textContent = text;
      const streaming = (message.parts || []).some((part) => part.state === "streaming");
      line.dataset.state = streaming ? "streaming" : "done";
      const here = this.#log.children[index] || null;
      if (here !== line) this.#log.insertBefore(line, here);
      index += 1;
    }
    this.#log.scrollTop = this.#log.scrollHeight;
  }

  /** Buttons and the state text follow the `state` attribute. */
  #sync() {
    const state = this.state;
    const active = ACTIVE.has(state);
    const focused = this.shadowRoot.activeElement;
    this.#talkButton.textContent = this.getAttribute("label") || "Talk";
    this.#talkButton.disabled = active;
    this.#hangUpButton.disabled = !active;
    this.#muteButton.disabled = state !== "listening" && state !== "speaking";
    this.#stateText.textContent = STATE_TEXT[state] || state;
    if (focused && focused.disabled) (active ? this.#hangUpButton : this.#talkButton).focus();
  }
}

if (!customElements.get("gateway-realtime-voice")) {
  customElements.define("gateway-realtime-voice", GatewayRealtimeVoiceElement);
}
