// Mint one client secret with the official @ai-sdk/gateway provider and print
// the result as JSON. Usage: node official_mint.mjs <json options>
// options: {baseURL, apiKey, team, kind, model, expiresAfterSeconds, api}
// (api: "live" or "realtime", the realtime kind's route; default the provider's choice)
import { createGateway } from "@ai-sdk/gateway";

const options = JSON.parse(process.argv[2]);
const gateway = createGateway({
  baseURL: options.baseURL,
  apiKey: options.apiKey,
  ...(options.team ? { teamIdOrSlug: options.team } : {}),
});
const api = {
  realtime: gateway.experimental_realtime,
  transcription: gateway.experimental_transcription,
  speech: gateway.experimental_speech,
}[options.kind];
const tokenOptions = { model: options.model };
if (options.api != null) tokenOptions.api = options.api;
if (options.expiresAfterSeconds != null) {
  tokenOptions.expiresAfterSeconds = options.expiresAfterSeconds;
}
try {
  const result = await api.getToken(tokenOptions);
  process.stdout.write(JSON.stringify({ result }));
} catch (error) {
  process.stdout.write(JSON.stringify({ error: { name: error.name, type: error.type, statusCode: error.statusCode } }));
}
