// The app's own JS API over the AI SDK. This is the only module that imports
// the vendored bundle (vendor/ai-sdk.min.mjs, built by `make vendor` from
// vendor/ai-sdk/), so a later AI SDK release changes this file and nothing
// the pages or the elements use.
//
// - VoiceSession: the AI SDK's own realtime session
//   (Experimental_AbstractRealtimeSession, the class React's
//   experimental_useRealtime wraps), connected through the app's setup
//   endpoint ({ api: { token: setupUrl } }): microphone capture, playback,
//   the Gateway's event protocol.
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
import { GatewayRealtimeError, backoffDelay, fetchSecret } from "./gateway-realtime.mjs";

/** PCM rate the Gateway's streams use unless told otherwise. */
export const PCM_RATE = 24000;

/**
 * The AI SDK's realtime session, publishing every state change to `onChange`.
 *
 * new VoiceSession({ setupUrl, model, onChange, onEvent, onError, ...options })
 * `model` is the model id the server mints for (the tag writes the kind's
 * default); the server decides, the id only selects the SDK's model class.
 */
export class VoiceSession extends Experimental_AbstractRealtimeSession {
  constructor({ setupUrl, model, onChange, ...options }) {
    if (!setupUrl) throw GatewayRealtimeError("VoiceSession needs a setupUrl", { fatal: true });
    super({
      ...options,
      model: createGateway({}).experimental_realtime(model),
      api: { token: setupUrl },
    });
    this.onChange = onChange;
  }

  setState(key, value) {
    if (this.onChange) this.onChange(key, value, this.state);
  }
}

/**
 * POST the setup endpoint for a client secret, waiting out 503/429 answers
 * (Retry-After, bounded backoff) up to `maxAttempts`; `onRetry(error, ms)`
 * is told of each wait. An answer whose Retry-After is longer than
 * `maxWaitMs` (a used-up quota says when its window ends) fails at once.
 * Resolves to {token, url, expiresAt?, protocols?}.
 */
export async function mintSecret(setupUrl, { signal, maxAttempts = 4, maxWaitMs = 30000, onRetry } = {}) {
  for (let attempt = 0; ; attempt += 1) {
    try {
      return await fetchSecret(setupUrl, {}, undefined, signal);
    } catch (error) {
      const busy = error && (error.status === 503 || error.status === 429);
      const tooLong = busy && error.retryAfterMs != null && error.retryAfterMs > maxWaitMs;
      if (!busy || tooLong || attempt + 1 >= maxAttempts) throw error;
      const wait = backoffDelay(attempt, error.retryAfterMs);
      if (onRetry) onRetry(error, wait);
      await new Promise((resolve, reject) => {
        const timer = setTimeout(resolve, wait);
        if (signal) {
          signal.addEventListener(
            "abort",
            () => {
              clearTimeout(timer);
              reject(signal.reason);
            },
            { once: true },
          );
        }
      });
    }
  }
}

function teamHeader(secret) {
  // The mint answer's subprotocols carry the team, base64url; the AI SDK
  // takes it as the header it turns back into that subprotocol.
  const team = (secret.protocols || []).find((p) => p.startsWith("ai-gateway-team."));
  if (!team) return {};
  const encoded = team.slice("ai-gateway-team.".length).replace(/-/g, "+").replace(/_/g, "/");
  const bytes = Uint8Array.from(atob(encoded), (c) => c.charCodeAt(0));
  return { "x-vercel-ai-gateway-team": new TextDecoder().decode(bytes) };
}

/**
 * The AI SDK's Gateway provider for a minted secret: the secret rides the
 * WebSocket's subprotocols (`ai-gateway-auth.<token>`), the base URL and the
 * model id come from the socket URL the server answered with.
 */
export function gatewayForSecret(secret) {
  const url = new URL(secret.url);
  const modelId = url.searchParams.get("ai-model-id");
  const path = url.pathname.replace(/\/(realtime|transcription|speech)-model\/?$/, "");
  const baseURL = `${url.protocol.replace(/^ws/, "http")}//${url.host}${path}`;
  const provider = createGateway({ apiKey: secret.token, baseURL, headers: teamHeader(secret) });
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

export { GatewayRealtimeError };
