// ES module entry point for the browser helper. The implementation lives in
// gateway-realtime.js (one copy of the logic); importing it for its side
// effect defines globalThis.GatewayRealtime, which is re-exported here.
import "./gateway-realtime.js";

const api = globalThis.GatewayRealtime;

export const connect = api.connect;
export const readConfig = api.readConfig;
export const fetchSecret = api.fetchSecret;
export const protocolsFor = api.protocolsFor;
export const isExpired = api.isExpired;
export const backoffDelay = api.backoffDelay;
export const aiSdkApi = api.aiSdkApi;
export const GatewayRealtimeError = api.GatewayRealtimeError;
export default api;
