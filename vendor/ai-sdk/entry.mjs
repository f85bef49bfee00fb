// The one file that names the AI SDK's browser API. `make vendor` bundles it
// with esbuild into gateway_realtime/static/gateway_realtime/vendor/; only
// gateway_realtime/static/gateway_realtime/sdk.mjs imports the result, so a
// later AI SDK release changes this file, the lock and that module.
export {
  Experimental_AbstractRealtimeSession,
  experimental_resampleAudio,
  experimental_streamSpeech,
  experimental_streamTranscribe,
} from "ai";
export { createGateway } from "@ai-sdk/gateway";
