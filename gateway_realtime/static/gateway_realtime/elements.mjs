// Defines the three custom elements; the element template tags load this
// module (`<script type="module">`), and so may a page's own script.
import "./voice-element.mjs";
import "./dictation-element.mjs";
import "./speech-element.mjs";

export { GatewayRealtimeElement, STATES } from "./element-base.mjs";
