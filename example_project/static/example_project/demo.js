// The text chat, for machines without a microphone: talks to the Gateway's
// realtime route with the normalized AI SDK events (send a text message, show
// the reply as it streams in). It connects when the user presses Connect: the
// page carries no secret, so the helper fetches one from the block's refreshUrl.
(function () {
  "use strict";
  var statusEl = document.getElementById("status");
  var list = document.getElementById("conversation");
  var form = document.getElementById("composer");
  var input = document.getElementById("message");
  var send = document.getElementById("send");
  var connectButton = document.getElementById("connect");
  var socket = null;
  var replies = {};

  function setStatus(state, text) {
    statusEl.dataset.state = state;
    statusEl.textContent = text;
  }

  function addLine(role, text) {
    var li = document.createElement("li");
    li.className = role;
    li.textContent = text;
    list.appendChild(li);
    return li;
  }

  function onMessage(event) {
    var data;
    try {
      data = JSON.parse(event.data);
    } catch (err) {
      return;
    }
    var id = data.itemId || data.responseId || "reply";
    if (data.type === "text-delta" || data.type === "audio-transcript-delta") {
      if (!replies[id]) replies[id] = addLine("assistant", "");
      replies[id].textContent += data.delta;
    } else if (data.type === "response-done") {
      document.body.dataset.responses = String(Number(document.body.dataset.responses || 0) + 1);
    } else if (data.type === "error") {
      addLine("error", (data.error && data.error.message) || data.message || "Error");
    }
  }

  function open() {
    if (socket) socket.close();
    setStatus("connecting", "Connecting…");
    input.disabled = send.disabled = true;
    GatewayRealtime.connect({
      onRetry: function (error) {
        setStatus("connecting", "Retrying: " + error.message);
      },
    }).then(
      function (ws) {
        socket = ws;
        setStatus("open", "Connected.");
        connectButton.textContent = "Reconnect";
        input.disabled = send.disabled = false;
        input.focus();
        ws.addEventListener("message", onMessage);
        ws.addEventListener("close", function (event) {
          if (socket !== ws) return;
          socket = null;
          input.disabled = send.disabled = true;
          setStatus("closed", "Disconnected (" + event.code + ").");
        });
      },
      function (error) {
        setStatus("error", "Could not connect: " + error.message);
      }
    );
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var text = input.value.trim();
    if (!text || !socket) return;
    addLine("user", text);
    socket.send(JSON.stringify({
      type: "conversation-item-create",
      item: { type: "text-message", role: "user", text: text },
    }));
    socket.send(JSON.stringify({ type: "response-create" }));
    input.value = "";
  });
  // A busy setup endpoint (503 or 429): the helper waits and asks again.
  document.addEventListener("gateway-realtime:retrying", function (event) {
    var seconds = Math.ceil(event.detail.retryInMs / 1000);
    setStatus("busy", "The Gateway is busy; trying again in " + seconds + " s…");
  });
  connectButton.addEventListener("click", open);
})();
