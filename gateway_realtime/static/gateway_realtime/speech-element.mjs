// <gateway-realtime-speech text="..."> or <gateway-realtime-speech for="ID">:
// read a text aloud.
//
// Pressing "Read aloud" mints a speech secret through `setup-url` (a new one
// each press) and streams the text to the Gateway with the AI SDK's
// streaming speech (through sdk.mjs); the PCM16 audio is played with Web
// Audio as it arrives, each chunk scheduled right after the one before.
// The text is the `text` attribute, else the text of the element whose id
// is in `for`, read when the button is pressed.
//
// Attributes: text | for, setup-url, max-seconds, voice, label (the read
// aloud button's text).
// States: idle -> connecting -> speaking -> ended | error. `speaking` starts
// with the first chunk scheduled; `ended` comes when the stream is over and
// the last chunk has played, or at once on "Stop".
// Properties: `scheduledChunks` (audio chunks scheduled in the current or
// last reading), `scheduledSeconds` (their length in seconds).
// Events: `gateway-realtime-state` {state}, `gateway-realtime-error` {type,
// message, error}, `gateway-realtime-max-seconds` {seconds}.
// Error types: the setup endpoint's (quota_exceeded, gateway_busy, ...), the
// Gateway stream's (internal_server_error, ...), `missing_target` (no element
// with the id in `for`), `nothing_to_read` (the text is empty: nothing is
// minted), `unsupported_audio` (not PCM), `speech_error`.
//
// Methods: start(), stop(); `session` is the reading under way.
//
// Parts (element-base.mjs names them for all three elements): controls,
// `button speak`, `button stop` and status.
// Custom properties (elements.css): --gateway-realtime-accent,
// --gateway-realtime-on-accent, --gateway-realtime-radius,
// --gateway-realtime-gap, --gateway-realtime-font, --gateway-realtime-muted,
// --gateway-realtime-danger.
import { GatewayRealtimeElement, button, firstLine, part, typedError } from "./element-base.mjs";
import { PCM_RATE, float32FromPcm16, streamSpeech } from "./sdk.mjs";

/** PCM16 chunks played back to back on one AudioContext. */
class Player {
  constructor(context) {
    this.context = context;
    this.next = 0; // context time at which the next chunk starts
    this.sources = new Set();
    this.leftover = null; // an odd byte carried to the next chunk
    this.chunks = 0;
    this.seconds = 0;
    this.onIdle = null;
  }

  /** Schedule `bytes` (PCM16 little-endian, mono, at `rate`) after what is already scheduled. */
  play(bytes, rate) {
    if (this.leftover !== null) {
      const joined = new Uint8Array(bytes.length + 1);
      joined[0] = this.leftover;
      joined.set(bytes, 1);
      bytes = joined;
      this.leftover = null;
    }
    if (bytes.length % 2) {
      this.leftover = bytes[bytes.length - 1];
      bytes = bytes.subarray(0, bytes.length - 1);
    }
    if (bytes.length === 0) return false;
    const samples = float32FromPcm16(bytes);
    const buffer = this.context.createBuffer(1, samples.length, rate);
    buffer.getChannelData(0).set(samples);
    const source = this.context.createBufferSource();
    source.buffer = buffer;
    source.connect(this.context.destination);
    const at = Math.max(this.next, this.context.currentTime);
    source.start(at);
    this.next = at + buffer.duration;
    this.sources.add(source);
    source.onended = () => {
      this.sources.delete(source);
      source.disconnect();
      if (this.sources.size === 0 && this.onIdle) this.onIdle();
    };
    this.chunks += 1;
    this.seconds += buffer.duration;
    return true;
  }

  /** Resolves once every scheduled chunk has played. */
  drained() {
    if (this.sources.size === 0) return Promise.resolve();
    return new Promise((resolve) => {
      this.onIdle = resolve;
    });
  }

  stop() {
    for (const source of this.sources) {
      source.onended = null;
      try {
        source.stop();
      } catch {
        // Not started yet.
      }
      source.disconnect();
    }
    this.sources.clear();
    this.context.close().catch(() => {});
  }
}

export class GatewayRealtimeSpeech extends GatewayRealtimeElement {
  #speakButton;
  #stopButton;
  #session = null;
  #player = null;

  constructor() {
    super();
    const controls = part("div", "controls");
    this.#speakButton = button("speak", "Read aloud");
    this.#stopButton = button("stop", "Stop");
    this.#stopButton.hidden = true;
    controls.append(this.#speakButton, this.#stopButton);
    this.shadowRoot.append(controls, this.statusLine);

    this.#speakButton.addEventListener("click", () => {
      if (this.#session) this.stop();
      else this.start();
    });
    this.#stopButton.addEventListener("click", () => this.stop());
  }

  /** The reading under way, or null. */
  get session() {
    return this.#session;
  }

  static get observedAttributes() {
    return ["label", "state"];
  }

  attributeChangedCallback() {
    this.#render();
  }

  connectedCallback() {
    super.connectedCallback();
    this.#render();
  }

  disconnectedCallback() {
    super.disconnectedCallback();
    this.stop();
  }

  /** Audio chunks scheduled for playback in the current (or last) reading. */
  get scheduledChunks() {
    return this.#player ? this.#player.chunks : 0;
  }

  /** Seconds of audio scheduled in the current (or last) reading. */
  get scheduledSeconds() {
    return this.#player ? this.#player.seconds : 0;
  }

  /** The text to read: `text`, else the text of the element named by `for`. */
  get text() {
    if (this.hasAttribute("text")) return normalize(this.getAttribute("text"));
    const target = this.target;
    return target ? normalize(target.textContent) : "";
  }

  get target() {
    const id = this.getAttribute("for");
    if (!id) return null;
    const root = this.getRootNode();
    return (
      (typeof root.getElementById === "function" && root.getElementById(id)) ||
      document.getElementById(id)
    );
  }

  #render() {
    const active = this.#session !== null;
    this.#speakButton.textContent = this.getAttribute("label") || "Read aloud";
    this.#speakButton.setAttribute("aria-pressed", String(active));
    this.#stopButton.hidden = !active;
  }

  /** Read the text aloud (what pressing "Read aloud" does). */
  async start() {
    if (this.#session) return;
    if (!this.hasAttribute("text") && this.getAttribute("for") && !this.target) {
      const id = this.getAttribute("for");
      this.fail(typedError(`No element with the id "${id}" to read.`, "missing_target"));
      return;
    }
    const text = this.text;
    if (!text) {
      this.fail(typedError("There is no text to read.", "nothing_to_read"));
      return;
    }
    // Made during the click, so the browser lets it play.
    const context = new AudioContext();
    const session = { abort: new AbortController(), expired: false, stopping: false };
    const player = new Player(context);
    this.#session = session;
    this.#player = player;
    this.setState("connecting");
    this.announce("Connecting…");
    this.startGuard(() => {
      session.expired = true;
      this.stop();
    });
    this.#render();
    try {
      context.resume().catch(() => {});
      const result = await streamSpeech({
        setupUrl: this.setupUrl,
        text,
        voice: this.getAttribute("voice") || undefined,
        rate: PCM_RATE,
        signal: session.abort.signal,
        onRetry: (error, ms) => this.announce(`Busy, trying again in ${Math.ceil(ms / 1000)} s…`),
      });
      let streamError = null;
      for await (const part of result.fullStream) {
        if (this.#session !== session) return;
        if (part.type === "error") {
          streamError = part.error;
          continue;
        }
        if (part.type !== "audio") continue;
        const format = part.audioFormat || {};
        if (format.type && format.type !== "audio/pcm") {
          throw typedError(`Cannot play ${format.type} audio as it streams.`, "unsupported_audio");
        }
        if (player.play(part.audio, format.rate || PCM_RATE) && this.state !== "speaking") {
          this.setState("speaking");
          this.announce("Reading aloud…");
        }
      }
      if (streamError) throw streamError;
      await player.drained();
      this.#settle(session, null);
    } catch (error) {
      this.#settle(session, error);
    }
  }

  /** Stop reading at once (what "Stop" does). */
  stop() {
    const session = this.#session;
    if (!session) return;
    session.stopping = true;
    session.abort.abort(typedError("Reading stopped.", "aborted"));
    this.#settle(session, null);
  }

  #settle(session, error) {
    if (this.#session !== session) return;
    this.#session = null;
    this.clearGuard();
    this.#player.stop();
    if (error && !session.stopping) {
      this.fail(firstLine(error, "speech_error"), "speech_error");
      this.#render();
      return;
    }
    if (!session.expired) this.announce(session.stopping ? "Stopped." : "Done.");
    this.setState("ended");
    this.#render();
  }
}

function normalize(text) {
  return (text || "").replace(/\s+/g, " ").trim();
}

if (!customElements.get("gateway-realtime-speech")) {
  customElements.define("gateway-realtime-speech", GatewayRealtimeSpeech);
}
