// The anchor: the realtime setup endpoint exactly as the AI SDK docs show it
// (app/api/realtime/setup/route.ts), on a bare node:http server so that the
// anchor pays for nothing but the official provider's own work.
import http from 'node:http';
import { createGateway } from '@ai-sdk/gateway';

const gateway = createGateway({
  apiKey: process.env.AI_GATEWAY_API_KEY,
  baseURL: process.env.AI_GATEWAY_BASE_URL,
});

const server = http.createServer(async (req, res) => {
  if (req.method !== 'POST' || req.url !== '/api/realtime/setup') {
    res.writeHead(404).end();
    return;
  }
  for await (const _chunk of req) {
    // The body (sessionConfig) is not used by the setup route.
  }
  try {
    const token = await gateway.experimental_realtime.getToken({
      model: 'openai/gpt-realtime-2',
      expiresAfterSeconds: 60 * 10,
    });
    const body = JSON.stringify(token);
    res.writeHead(200, {
      'Content-Type': 'application/json',
      'Content-Length': Buffer.byteLength(body),
    });
    res.end(body);
  } catch (error) {
    res.writeHead(502, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ error: String(error && error.name) }));
  }
});

server.keepAliveTimeout = 30_000;
server.listen(Number(process.env.PORT || 0), '127.0.0.1', () => {
  console.log(`anchor listening on http://127.0.0.1:${server.address().port}`);
});
