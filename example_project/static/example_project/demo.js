// The text chat, for machines without a microphone: talks to the Gateway's
// realtime route with the normalized AI SDK events (send a text message, show
// the reply as it streams in). It connects when the user presses Connect: the
// page carries no secret ({% gateway_realtime_config %} writes the block with
// its refreshUrl), so connect() mints one there first.
import { RETRYING_EVENT, connect } from "../gateway_realtime/gateway-realtime.mjs";

const statusLine = document.getElementById("status");
const list = document.getElementById("conversation");
const form = document.getElementById("composer");
const input = document.getElementById("message");
const send = document.getElementById("send");
const connectButton = document.getElementById("connect");
let socket = null;
const replies = {};

function setStatus(state, text) {
  statusLine.dataset.state = state;
  statusLine.textContent = text;
}

function addLine(role, text) {
  const item = document.createElement("li");
  item.className = role;
  item.textContent = text;
  list.append(item);
  return item;
}

function onMessage(event) {
  let data;
  try {
    data = JSON.parse(event.data);
  } catch {
    return;
  }
  const id = data.itemId || data.responseId || "reply";
  if (data.type === "text-delta" || data.type === "audio-transcript-delta") {
    if (!replies[id]) replies[id] = addLine("assistant", "");
    replies[id].textContent += data.delta;
  } else if (data.type === "response-done") {
    document.body.dataset.responses = String(Number(document.body.dataset.responses || 0) + 1);
  } else if (data.type === "error") {
    addLine("error", (data.error && data.error.message) || data.message || "Error");
  }
}

async function open() {
  if (socket) socket.close();
  setStatus("connecting", "Connecting…");
  input.disabled = send.disabled = true;
  let ws;
  try {
    ws = await connect();
  } catch (error) {
    setStatus("error", `Could not connect: ${error.message}`);
    return;
  }
  socket = ws;
  setStatus("open", "Connected.");
  connectButton.textContent = "Reconnect";
  input.disabled = send.disabled = false;
  input.focus();
  ws.addEventListener("message", onMessage);
  ws.addEventListener("close", (event) => {
    if (socket !== ws) return;
    socket = null;
    input.disabled = send.disabled = true;
    setStatus("closed", `Disconnected (${event.code}).`);
  });
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = input.value.trim();
  if (!text || !socket) return;
  addLine("user", text);
  socket.send(
    JSON.stringify({
      type: "conversation-item-create",
      item: { type: "text-message", role: "user", text },
    }),
  );
  socket.send(JSON.stringify({ type: "response-create" }));
  input.value = "";
});
// A busy setup endpoint (503 or 429): connect() waits and asks again.
document.addEventListener(RETRYING_EVENT, (event) => {
  const seconds = Math.ceil(event.detail.retryInMs / 1000);
  setStatus("busy", `The Gateway is busy; trying again in ${seconds} s…`);
});
connectButton.addEventListener("click", open);
// Module scripts run after the page is parsed: say when the chat is wired up.
form.dataset.ready = "";
