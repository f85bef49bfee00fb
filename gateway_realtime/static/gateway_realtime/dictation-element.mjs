// <gateway-realtime-dictation for="ID">: speak into the input or textarea
// whose id is in `for`.
//
// Pressing "Dictate" asks for the microphone, mints a transcription secret
// through `setup-url` and streams the microphone (PCM16 at 24 kHz) to the
// Gateway with the AI SDK's streaming transcription (through sdk.mjs). The
// words are written into the field as they arrive, at the cursor if the
// field had focus before, else after its text, with an `input` event per
// change (and a `change` event at the end) so frameworks and htmx notice.
// The final transcript replaces the interim words. "Stop" (or pressing
// "Dictate" again) ends the audio, waits for the final text, then `ended`.
//
// Attributes: for (required), setup-url, max-seconds, label (the dictate
// button's text).
// States: idle -> connecting -> listening -> ended | error.
// Events: `gateway-realtime-state` {state}, `gateway-realtime-error` {type,
// message, error}, `gateway-realtime-max-seconds` {seconds}, and on the
// field: `input`, `change`.
// Error types: the setup endpoint's (quota_exceeded, gateway_busy, ...), the
// Gateway stream's (internal_server_error, ...), `missing_target` (no input
// or textarea with the id in `for`), `microphone_denied`,
// `microphone_unavailable`, `transcription_error`.
//
// Methods: start(), stop(), abort(); `session` is the dictation under way.
//
// Parts (element-base.mjs names them for all three elements): controls,
// `button dictate`, `button stop`, status, log (the transcript) and
// transcript (one line: what was heard in one dictation, data-role="user").
// Custom properties (elements.css): --gateway-realtime-accent,
// --gateway-realtime-on-accent, --gateway-realtime-radius,
// --gateway-realtime-gap, --gateway-realtime-font, --gateway-realtime-muted,
// --gateway-realtime-danger.
import {
  GatewayRealtimeElement,
  button,
  firstLine,
  openMicrophone,
  part,
  typedError,
} from "./element-base.mjs";
import { PCM_RATE, pcm16FromFloat32, resampleAudio, streamTranscription } from "./sdk.mjs";

// Samples per ScriptProcessor callback: about 85 ms at 48 kHz, one binary
// frame each (the Gateway caps a frame at 256 KiB, far above this).
const CAPTURE_FRAME = 4096;
// How long to wait for the final transcript after the audio ends.
const FINISH_TIMEOUT_MS = 15000;

// Fields the user has put the cursor in: dictation goes to their cursor;
// into a field never focused it goes after the text already there. Each
// connected element listens for focus (and stops when it is removed).
const focusedFields = new WeakSet();
const noteFocus = (event) => focusedFields.add(event.target);

/** The microphone as a ReadableStream of PCM16 little-endian bytes at PCM_RATE. */
class MicrophonePcm {
  constructor(context, media) {
    this.context = context;
    this.media = media;
    this.controller = null;
    this.closed = false;
    this.readable = new ReadableStream({
      start: (controller) => {
        this.controller = controller;
      },
      // The AI SDK cancels the audio when the stream fails or finishes.
      cancel: () => this.stop(),
    });
    // Web Audio, as the AI SDK's own realtime capture does: a ScriptProcessor
    // hands over Float32 blocks at the context's rate.
    this.source = context.createMediaStreamSource(media);
    this.processor = context.createScriptProcessor(CAPTURE_FRAME, 1, 1);
    this.processor.onaudioprocess = (event) => this.push(event.inputBuffer.getChannelData(0));
    // A ScriptProcessor only runs when connected to the destination; its
    // output is never written, so this plays silence.
    this.source.connect(this.processor);
    this.processor.connect(context.destination);
  }

  push(block) {
    if (this.closed) return;
    const samples = resampleAudio(new Float32Array(block), this.context.sampleRate, PCM_RATE);
    this.controller.enqueue(pcm16FromFloat32(samples));
  }

  /** No more audio: ends the stream (the SDK then sends audio-done) and frees the microphone. */
  stop() {
    if (this.closed) return;
    this.closed = true;
    this.processor.onaudioprocess = null;
    this.processor.disconnect();
    this.source.disconnect();
    for (const track of this.media.getTracks()) track.stop();
    this.context.close().catch(() => {});
    try {
      this.controller.close();
    } catch {
      // Already cancelled by the reader.
    }
  }
}

/**
 * The words of one dictation in the field: between the text before the
 * cursor and the text after it, re-anchored at the cursor if the user edits
 * the field meanwhile.
 */
class FieldWriter {
  constructor(field) {
    this.field = field;
    const value = field.value;
    let start = value.length;
    let end = value.length;
    if (focusedFields.has(field) && typeof field.selectionStart === "number") {
      start = field.selectionStart;
      end = field.selectionEnd;
    }
    this.before = value.slice(0, start);
    this.after = value.slice(end);
    this.initial = value;
    this.written = value;
    this.lastLength = 0;
    this.consumed = 0; // characters of the transcript written before a re-anchor
  }

  write(transcript) {
    const field = this.field;
    if (field.value !== this.written) {
      // The user typed: what is in the field now stays, later words go to the cursor.
      const value = field.value;
      const start = typeof field.selectionStart === "number" ? field.selectionStart : value.length;
      const end = typeof field.selectionEnd === "number" ? field.selectionEnd : value.length;
      this.before = value.slice(0, start);
      this.after = value.slice(end);
      this.consumed = this.lastLength;
    }
    this.lastLength = transcript.length;
    const text = transcript.slice(this.consumed).trim();
    const lead = text && this.before && !/\s$/.test(this.before) ? " " : "";
    const trail = text && this.after && !/^\s/.test(this.after) ? " " : "";
    const inserted = lead + text + trail;
    const value = this.before + inserted + this.after;
    if (value === field.value) return;
    setFieldValue(field, value);
    this.written = field.value;
    if (typeof field.setSelectionRange === "function" && document.activeElement === field) {
      const caret = this.before.length + lead.length + text.length;
      try {
        field.setSelectionRange(caret, caret);
      } catch {
        // Input types without a selection (email, number).
      }
    }
    field.dispatchEvent(new Event("input", { bubbles: true }));
  }
}

// The prototype's setter, not the instance's: a framework that wraps
// `value` on the instance (React does) then sees the change with the event.
function setFieldValue(field, value) {
  const prototype = field instanceof HTMLTextAreaElement ? HTMLTextAreaElement : HTMLInputElement;
  const descriptor = Object.getOwnPropertyDescriptor(prototype.prototype, "value");
  descriptor.set.call(field, value);
}

/** One dictation's transcript, from the stream's parts (segments by id). */
class Transcript {
  constructor() {
    this.segments = [];
  }

  segment(id) {
    let segment = this.segments.find((s) => s.id === id && !s.final);
    if (!segment && id == null) segment = this.segments.findLast((s) => !s.final);
    if (!segment) {
      segment = { id, text: "", final: false };
      this.segments.push(segment);
    }
    return segment;
  }

  /** Apply a fullStream part; true when the text changed. */
  apply(part) {
    switch (part.type) {
      case "transcript-delta":
        this.segment(part.id).text += part.delta;
        return true;
      case "transcript-partial":
        this.segment(part.id).text = part.text;
        return true;
      case "transcript-final": {
        const segment = this.segment(part.id);
        segment.text = part.text;
        segment.final = true;
        return true;
      }
      default:
        return false;
    }
  }

  get text() {
    return this.segments
      .map((s) => s.text.trim())
      .filter(Boolean)
      .join(" ");
  }
}

export class GatewayRealtimeDictation extends GatewayRealtimeElement {
  #dictateButton;
  #stopButton;
  #log;
  #session = null;

  constructor() {
    super();
    const controls = part("div", "controls");
    this.#dictateButton = button("dictate", "Dictate");
    this.#dictateButton.setAttribute("aria-pressed", "false");
    this.#stopButton = button("stop", "Stop");
    this.#stopButton.hidden = true;
    controls.append(this.#dictateButton, this.#stopButton);
    this.#log = part("div", "log", {
      role: "log",
      "aria-live": "polite",
      "aria-label": "Dictated text",
    });
    this.shadowRoot.append(controls, this.statusLine, this.#log);

    this.#dictateButton.addEventListener("click", () => {
      if (this.active) this.stop();
      else this.start();
    });
    this.#stopButton.addEventListener("click", () => this.stop());
  }

  /** The dictation under way (its abort controller, audio and timers), or null. */
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
    document.addEventListener("focusin", noteFocus, true);
    this.#render();
  }

  disconnectedCallback() {
    super.disconnectedCallback();
    document.removeEventListener("focusin", noteFocus, true);
    if (this.#session) this.abort();
  }

  /** Whether a dictation is under way (connecting, listening or finishing). */
  get active() {
    return this.#session !== null;
  }

  /** The input or textarea named by `for`, or null. */
  get field() {
    const id = this.getAttribute("for");
    if (!id) return null;
    const root = this.getRootNode();
    const found =
      (typeof root.getElementById === "function" && root.getElementById(id)) ||
      document.getElementById(id);
    return found instanceof HTMLInputElement || found instanceof HTMLTextAreaElement
      ? found
      : null;
  }

  #render() {
    const active = this.active;
    this.#dictateButton.textContent = this.getAttribute("label") || "Dictate";
    this.#dictateButton.setAttribute("aria-pressed", String(active));
    this.#stopButton.hidden = !active;
  }

  /** Start dictating (what pressing "Dictate" does). */
  async start() {
    if (this.#session) return;
    const field = this.field;
    if (!field) {
      const id = this.getAttribute("for");
      const message = `No input or textarea with the id "${id || ""}" to dictate into.`;
      this.fail(typedError(message, "missing_target"));
      return;
    }
    // Made during the click, so the browser lets it run.
    const context = new AudioContext();
    const session = {
      abort: new AbortController(),
      context,
      capture: null,
      finishing: false,
      expired: false,
      stopping: false,
      finishTimer: null,
    };
    this.#session = session;
    this.setState("connecting");
    this.announce("Connecting…");
    this.startGuard(() => {
      session.expired = true;
      this.#finish(session);
    });
    this.#render();
    try {
      context.resume().catch(() => {});
      const media = await openMicrophone();
      if (session.abort.signal.aborted) {
        for (const track of media.getTracks()) track.stop();
        throw session.abort.signal.reason;
      }
      session.capture = new MicrophonePcm(context, media);
      const result = await streamTranscription({
        setupUrl: this.setupUrl,
        audio: session.capture.readable,
        rate: PCM_RATE,
        signal: session.abort.signal,
        onRetry: (error, ms) => this.announce(`Busy, trying again in ${Math.ceil(ms / 1000)} s…`),
      });
      await this.#listen(session, result, field);
    } catch (error) {
      this.#settle(session, error);
    }
  }

  async #listen(session, result, field) {
    const parts = result.fullStream;
    // stream-start resolves the warnings: the Gateway took the stream.
    result.warnings.then(
      () => {
        if (this.#session === session && !session.finishing) {
          this.setState("listening");
          this.announce("Listening… press Stop when you are done.");
        }
      },
      () => {},
    );
    const transcript = new Transcript();
    const writer = new FieldWriter(field);
    const line = part("p", "transcript");
    line.dataset.role = "user";
    line.dataset.state = "streaming";
    let streamError = null;
    for await (const part of parts) {
      if (part.type === "error") {
        streamError = part.error;
        continue;
      }
      if (!transcript.apply(part)) continue;
      const text = transcript.text;
      if (!line.isConnected && text) this.#log.append(line);
      line.textContent = text;
      writer.write(text);
    }
    if (streamError) throw streamError;
    // The finish part's text is the whole transcript: it replaces the interim words.
    const final = await result.text.catch(() => transcript.text);
    if (final) {
      if (!line.isConnected) this.#log.append(line);
      line.textContent = final.trim();
      writer.write(final);
    }
    line.dataset.state = "done";
    if (field.value !== writer.initial) field.dispatchEvent(new Event("change", { bubbles: true }));
    this.#settle(session, null);
  }

  /** End the audio and wait for the final transcript (what "Stop" does). */
  stop() {
    const session = this.#session;
    if (!session) return;
    if (session.finishing || this.state === "connecting") {
      // Pressed again while finishing, or before the stream started: stop now.
      this.abort();
      return;
    }
    this.#finish(session);
  }

  #finish(session) {
    if (session !== this.#session) return;
    if (this.state === "connecting" || !session.capture) {
      this.abort();
      return;
    }
    session.finishing = true;
    session.capture.stop();
    if (!session.expired) this.announce("Finishing… press Stop again not to wait.");
    session.finishTimer = setTimeout(() => {
      if (this.#session !== session) return;
      this.announce("The final transcript did not come; stopped.");
      session.expired = true; // keep that message
      this.abort();
    }, FINISH_TIMEOUT_MS);
  }

  /** Stop at once, without waiting for the final transcript. */
  abort() {
    const session = this.#session;
    if (!session) return;
    session.stopping = true;
    session.abort.abort(typedError("Dictation stopped.", "aborted"));
    this.#settle(session, null);
  }

  #settle(session, error) {
    if (this.#session !== session) return;
    this.#session = null;
    clearTimeout(session.finishTimer);
    this.clearGuard();
    if (session.capture) session.capture.stop();
    else session.context.close().catch(() => {});
    if (error && !session.stopping && !isNothingHeard(error)) {
      this.fail(firstLine(error, "transcription_error"), "transcription_error");
      this.#render();
      return;
    }
    if (!session.expired) {
      if (session.stopping) this.announce("Stopped.");
      else this.announce(error && isNothingHeard(error) ? "Nothing was heard." : "Done.");
    }
    this.setState("ended");
    this.#render();
  }
}

function isNothingHeard(error) {
  return Boolean(error && error.name === "AI_NoTranscriptGeneratedError");
}

if (!customElements.get("gateway-realtime-dictation")) {
  customElements.define("gateway-realtime-dictation", GatewayRealtimeDictation);
}
