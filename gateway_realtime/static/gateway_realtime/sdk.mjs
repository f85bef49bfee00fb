// The app's own JS API over the AI SDK. This is the only module that imports
// the vendored bundle (vendor/ai-sdk.min.mjs, built by `make vendor` from
// vendor/ai-sdk/), so a later AI SDK release changes this file and nothing
// the pages or the elements use.
//
// - VoiceSession: the AI SDK's own realtime session
//   (Experimental_AbstractRealtimeSession, the class React's
//   experimental_useRealtime wraps) on a secret from the app's setup
//   endpoint, or through the site's relay (relay mode, docs/relay.md):
//   microphone capture, playback, the Gateway's event protocol.
// - streamTranscription / streamSpeech: the AI SDK's streaming
//   transcription and speech, on a client secret minted by the setup
//   endpoint of that kind.
// - pcm16FromFloat32 / float32FromPcm16 / resampleAudio: the audio plumbing
//   the dictation and speech elements need around them.
import {
  Experimental_AbstractRealtimeSession,
  createGateway,
  experimental_resampleAudio,
  experimental_streamSpeech,
  experimental_streamTranscribe,
} from "./vendor/ai-sdk.min.mjs";
import { GatewayRealtimeError, mintSecret } from "./gateway-realtime.mjs";

/** PCM rate the Gateway's streams use unless told otherwise. */
export const PCM_RATE = 24000;

/**
 * The AI SDK's realtime session, publishing every state change to `onChange`.
 *
 * new VoiceSession({ setupUrl, model, api, onChange, onEvent, onError, onRetry, ...options })
 * `model` is the model id to ask the server for (the tag writes it: the
 * kind's default unless the page chose one); it is sent with the mint (and
 * as `?model=` to a relay), and the user's policy decides whether it is
 * allowed. `api` ("live" or "realtime", written by the tag from the
 * server's own choice, GATEWAY_REALTIME_REALTIME_API) selects the AI SDK's
 * model class; without it the SDK's list of Live model ids does.
 *
 * A Live model (`live` is true; wire contract section 8) is a continuous
 * conversation: the AI SDK sends `session-start` with the session config
 * (only instructions, voice, the audio formats and providerOptions), starts
 * capture from the stream given to `connect({ stream })` once the Gateway
 * answers `session-started`, plays `audio-chunk` audio, and `close()` sends
 * `session-close` and waits for the final usage. There are no turns: no
 * messages, no text; `transcript-fragment` events carry both sides' words.
 *
 * `connect()` asks the setup endpoint for a client secret first, through
 * gateway-realtime.mjs's `mintSecret` (the app's one retry policy: busy
 * answers are waited out, a refusal keeps the endpoint's error type), then opens the AI SDK session on the Gateway
 * WebSocket the secret is for, offering the Gateway model's own
 * subprotocols (`ai-gateway-auth.<token>`). It rejects with that typed
 * error when no secret could be had; once the socket is being opened,
 * failures arrive as the AI SDK reports them (`onError`, status `error`).
 * Every `connect()` mints a new secret: a secret is good for one socket.
 * `disconnect()` also abandons a mint still in flight.
 *
 * Relay mode: given `relayUrl` (the site's relay route, e.g.
 * "/ws/gateway-realtime/realtime/"; a path is made absolute ws:// or wss://
 * from the page's location) instead of `setupUrl`, `connect()` opens the AI
 * SDK session on the site's own WebSocket (`api: { websocket }`, the SDK's
 * `server-websocket` connection): no setup request, no secret in the page.
 * The session cookie authenticates it; the relay holds the credential.
 * `socketClosed` is then a promise of the relay socket's close, `{code,
 * reason}`: the AI SDK reports a close's code and reason only when nothing
 * else failed first, and a microphone frame sent while the socket closes
 * ("Realtime WebSocket is not open") often does.
 */
export class VoiceSession extends Experimental_AbstractRealtimeSession {
  constructor({ setupUrl, relayUrl, model, api, onChange, onRetry, sessionConfig, ...options }) {
    if (!setupUrl && !relayUrl) {
      throw GatewayRealtimeError("VoiceSession needs a setupUrl or a relayUrl", { fatal: true });
    }
    if (api != null && api !== "live" && api !== "realtime") {
      throw GatewayRealtimeError(`VoiceSession api must be "live" or "realtime", not ${api}`, {
        fatal: true,
      });
    }
    const relay = relayUrl ? relaySocketUrl(relayUrl, undefined, model) : null;
    // The AI SDK reads `api` and `sessionConfig` from this object when it
    // connects; connect() points `api` at the socket of each fresh secret
    // (or, relayed, it stays on the site's own socket).
    const sdkModel = createGateway({}).experimental_realtime(model || "", api ? { api } : undefined);
    const sdkOptions = {
      ...options,
      sessionConfig,
      model: sdkModel,
      api: relay ? { websocket: relay } : { token: setupUrl },
    };
    super(sdkOptions);
    this.setupUrl = setupUrl || null;
    this.relayUrl = relay;
    this.model = model || "";
    /** True for a Live (continuous) model. */
    this.live = sdkModel.capabilities?.conversation === "continuous";
    this.socketClosed = Promise.resolve(null);
    this.onChange = onChange;
    this.onRetry = onRetry;
    this._sdkOptions = sdkOptions;
    this._sessionConfig = sessionConfig;
    this._minting = null;
  }

  async connect(connectOptions) {
    if (this.relayUrl) {
      // The relay opens the Gateway socket with the site's credential.
      this._sdkOptions.api = { websocket: this.relayUrl };
      const { result, socket } = openingSocket(() => super.connect(connectOptions));
      this.socketClosed = socket
        ? new Promise((resolve) => {
            const closed = (event) => resolve({ code: event.code, reason: event.reason });
            socket.addEventListener("close", closed, { once: true });
          })
        : Promise.resolve(null);
      await result;
      return;
    }
    if (this._minting) throw GatewayRealtimeError("VoiceSession is already connecting", { fatal: true });
    const minting = new AbortController();
    this._minting = minting;
    let secret;
    try {
      const body = this._sessionConfig ? { sessionConfig: this._sessionConfig } : {};
      if (this.model) body.model = this.model;
      secret = await mintSecret(this.setupUrl, { signal: minting.signal, onRetry: this.onRetry, body });
    } catch (error) {
      if (minting.signal.aborted) return; // disconnect() while minting: not an error
      throw error;
    } finally {
      if (this._minting === minting) this._minting = null;
    }
    if (minting.signal.aborted) return;
    const model = this._modelFor(secret);
    const { url, protocols } = model.getWebSocketConfig({ url: secret.url, token: secret.token });
    this._sdkOptions.api = { websocket: url, protocols };
    this._sdkOptions.sessionConfig = secret.tools
      ? { ...this._sessionConfig, tools: secret.tools }
      : this._sessionConfig;
    try {
      await super.connect(connectOptions);
    } finally {
      // The socket is open (or failed); the spent secret is not kept.
      this._sdkOptions.api = { token: this.setupUrl };
    }
  }

  /**
   * The AI SDK model for a minted secret: the model the server minted (its
   * URL's `ai-model-id`), of this session's class. A secret for the other
   * route (Live vs realtime) cannot be used by this session's class.
   */
  _modelFor(secret) {
    const url = new URL(secret.url);
    const minted = url.searchParams.get("ai-model-id") || "";
    const liveRoute = /\/live-model\/?$/.test(url.pathname);
    if (liveRoute !== this.live) {
      throw GatewayRealtimeError(
        `The server minted ${minted || "a model"} for the ${liveRoute ? "Live" : "realtime"} route, ` +
          `but this session was built for a ${this.live ? "Live" : "realtime"} model ` +
          "(the element's api attribute)",
        { type: "setup_failed", fatal: true },
      );
    }
    const current = this._sdkOptions.model;
    if (!minted || minted === current.modelId) return current;
    const api = this.live ? "live" : "realtime";
    this._sdkOptions.model = createGateway({}).experimental_realtime(minted, { api });
    return this._sdkOptions.model;
  }

  disconnect() {
    if (this._minting) {
      this._minting.abort();
      this._minting = null;
    }
    super.disconnect();
  }

  setState(key, value) {
    if (this.onChange) this.onChange(key, value, this.state);
  }
}

/**
 * Whether the AI SDK's Gateway model for `model` is a Live (continuous)
 * model: `api` ("live" or "realtime") when the server says, else the AI
 * SDK's own list of Live model ids.
 */
export function isLiveModel(model, api) {
  const options = api === "live" || api === "realtime" ? { api } : undefined;
  return (
    createGateway({}).experimental_realtime(model || "", options).capabilities?.conversation ===
    "continuous"
  );
}

/**
 * Call `start` and return `{result, socket}`: its result and the WebSocket
 * it opened while it ran synchronously (the AI SDK session's relay
 * connection opens its socket before its first await), else null. The
 * browser's own WebSocket constructor, watched for that one call only, so
 * the socket's close event can be heard whatever the SDK reports.
 */
function openingSocket(start) {
  const Native = globalThis.WebSocket;
  let socket = null;
  globalThis.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      socket = this;
    }
  };
  try {
    return { result: start(), socket };
  } finally {
    globalThis.WebSocket = Native;
  }
}

/**
 * The absolute ws:// or wss:// URL of a relay route: a path (or an http(s)
 * URL) resolves against the page, its scheme following the page's (https
 * pages get wss); a ws(s):// URL is kept. `model`, when given, is asked for
 * as `?model=` (the relay checks it against the user's allowed models).
 */
export function relaySocketUrl(
  relayUrl,
  base = globalThis.location && globalThis.location.href,
  model = "",
) {
  const url = new URL(relayUrl, base || undefined);
  if (model) url.searchParams.set("model", model);
  if (url.protocol === "http:") url.protocol = "ws:";
  else if (url.protocol === "https:") url.protocol = "wss:";
  if (url.protocol !== "ws:" && url.protocol !== "wss:") {
    throw GatewayRealtimeError(`Not a WebSocket URL: ${relayUrl}`, { fatal: true });
  }
  url.hash = "";
  return url.href;
}

/**
 * The close code and reason of a socket that closed under an AI SDK
 * session, from the error the SDK reports for it ("Realtime WebSocket
 * closed unexpectedly (code 4410: session revoked)"), or null. The relay
 * says why it ended a session this way (docs/relay.md, close codes).
 */
export function socketClose(error) {
  const match = /WebSocket closed unexpectedly \(code (\d+)(?:: (.*))?\)/.exec(
    (error && error.message) || "",
  );
  return match ? { code: Number(match[1]), reason: match[2] || "" } : null;
}

/**
 * The AI SDK's Gateway provider for a minted secret: the secret rides the
 * WebSocket's subprotocols (`ai-gateway-auth.<token>`), the base URL and the
 * model id come from the socket URL the server answered with. The team, if
 * the site has one, was given when the secret was minted; the browser sends
 * none, as the AI SDK's own client-secret connection does not.
 */
export function gatewayForSecret(secret) {
  const url = new URL(secret.url);
  const modelId = url.searchParams.get("ai-model-id");
  const path = url.pathname.replace(/\/(realtime|transcription|speech)-model\/?$/, "");
  const baseURL = `${url.protocol.replace(/^ws/, "http")}//${url.host}${path}`;
  const provider = createGateway({ apiKey: secret.token, baseURL });
  return { provider, modelId };
}

/**
 * Stream `audio` (a ReadableStream of PCM16 little-endian bytes at
 * `rate`) to the Gateway's transcription model; returns the AI SDK's
 * result (`fullStream` of transcript parts, `text`).
 */
export async function streamTranscription({ setupUrl, audio, rate = PCM_RATE, signal, onRetry }) {
  const secret = await mintSecret(setupUrl, { signal, onRetry });
  const { provider, modelId } = gatewayForSecret(secret);
  return experimental_streamTranscribe({
    model: provider.transcription(modelId),
    audio,
    inputAudioFormat: { type: "audio/pcm", rate },
    abortSignal: signal,
  });
}

/**
 * Speak `text` with the Gateway's speech model; returns the AI SDK's
 * result (`audioStream` of PCM16 bytes at `rate`).
 */
export async function streamSpeech({ setupUrl, text, voice, rate = PCM_RATE, signal, onRetry }) {
  const secret = await mintSecret(setupUrl, { signal, onRetry });
  const { provider, modelId } = gatewayForSecret(secret);
  return experimental_streamSpeech({
    model: provider.speech(modelId),
    text,
    voice,
    outputFormat: { type: "audio/pcm", rate },
    abortSignal: signal,
    onError: () => {},
  });
}

/** The AI SDK's resampler (Float32 samples from one rate to another). */
export function resampleAudio(samples, fromRate, toRate) {
  return experimental_resampleAudio(samples, fromRate, toRate);
}

/** Float32 samples in [-1, 1] to PCM16 little-endian bytes. */
export function pcm16FromFloat32(samples) {
  const bytes = new Uint8Array(samples.length * 2);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < samples.length; i += 1) {
    const s = Math.max(-1, Math.min(1, samples[i]));
    view.setInt16(i * 2, s < 0 ? s * 0x8000 : s * 0x7fff, true);
  }
  return bytes;
}

/** PCM16 little-endian bytes to Float32 samples in [-1, 1]. */
export function float32FromPcm16(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength - (bytes.byteLength % 2));
  const samples = new Float32Array(view.byteLength / 2);
  for (let i = 0; i < samples.length; i += 1) samples[i] = view.getInt16(i * 2, true) / 0x8000;
  return samples;
}

export { GatewayRealtimeError, mintSecret };
