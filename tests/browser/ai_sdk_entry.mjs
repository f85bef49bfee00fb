// Bundled by tests/browser/setup_deps.py with esbuild: the AI SDK's own
// browser realtime session (the code experimental_useRealtime drives), for
// the browser test that connects it through our endpoint and the emulator.
import { Experimental_AbstractRealtimeSession } from "ai";
import { createGateway } from "@ai-sdk/gateway";

// The session is abstract over how state is published (React uses hooks);
// here every change is kept and announced to the test.
class TestRealtimeSession extends Experimental_AbstractRealtimeSession {
  setState(key, value) {
    this.published = { ...(this.published || {}), [key]: value };
    if (this.onStateChange) this.onStateChange(key, value);
  }

  snapshot() {
    return this.state;
  }
}

globalThis.AiSdkRealtime = { TestRealtimeSession, createGateway };
