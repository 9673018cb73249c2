// The live feed (/console/events): an EventSource on the console's SSE stream, each change
// (and, when asked for, each operation line) added as a row built with textContent (never
// innerHTML), newest first. Served from this
// origin as a file, so the strict CSP (script-src 'self') holds: no inline script anywhere.
(function () {
  "use strict";
  var MAX_ROWS = 500;

  function cell(row, text) {
    var td = document.createElement("td");
    td.textContent = text == null ? "" : String(text);
    row.appendChild(td);
  }

  function ids(change) {
    var parts = [];
    if (change.sessionId) parts.push("session " + change.sessionId);
    if (change.paymentId) parts.push("payment " + change.paymentId);
    if (change.id) parts.push("_id " + change.id);
    if (change.channels) parts.push("channels " + change.channels.join(" "));
    return parts.join(", ");
  }

  function start(table) {
    var body = table.querySelector("tbody");
    var status = document.getElementById("feed-status");
    var source = new EventSource(table.getAttribute("data-stream"));
    source.addEventListener("ready", function () { status.textContent = "live"; });
    source.addEventListener("resync", function () { status.textContent = "live (link was down: changes may be missing)"; });
    source.addEventListener("operation", function (message) {
      var line = JSON.parse(message.data);
      add(body, line, {
        ids: [line.operation || "(anonymous)", line.durationMs + " ms", line.outcome]
          .concat(line.errorCodes).join(" "),
        version: "",
        source: "operation",
        error: line.outcome === "error",
      });
    });
    source.addEventListener("change", function (message) {
      var change = JSON.parse(message.data);
      add(body, change, { ids: ids(change), version: change.version, source: change.source });
    });
    source.onerror = function () { status.textContent = "reconnecting…"; };
  }

  function add(body, change, shown) {
    var row = document.createElement("tr");
    row.className = shown.error ? "new refused" : "new";
    row.setAttribute("data-type", change.type);
    cell(row, new Date(change.time).toISOString());
    cell(row, change.type);
    cell(row, change.userId);
    cell(row, shown.ids);
    cell(row, shown.version);
    cell(row, shown.source);
    cell(row, change.process);
    cell(row, change.requestId ? change.requestId.slice(0, 12) + "…" : "");
    row.lastChild.title = change.requestId || "";
    body.insertBefore(row, body.firstChild);
    while (body.rows.length > MAX_ROWS) body.deleteRow(body.rows.length - 1);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var table = document.getElementById("feed");
    if (table) start(table);
  });
})();
