// tradewarden operator console: the little the pages need beyond HTML forms. No inline script anywhere
// (the Content-Security-Policy forbids it); every text from the server is set with textContent, never as HTML.
(function () {
  "use strict";
  var body = document.body;
  var csrf = body.getAttribute("data-csrf") || "";

  // htmx requests that change state carry the session's CSRF token (forms carry it as a field).
  body.addEventListener("htmx:configRequest", function (event) {
    if (csrf) { event.detail.headers["X-CSRF-Token"] = csrf; }
  });

  // --- auto-refresh: a [data-refresh] block is fetched again every few seconds and swapped in place (by htmx),
  // but never while the person is typing in it or has filled in one of its fields.
  var REFRESH_MS = 5000;
  var busy = function (block) {
    var fields = block.querySelectorAll("input:not([type=hidden]), select, textarea");
    for (var i = 0; i < fields.length; i++) {
      if (fields[i] === document.activeElement) { return true; }
      if ((fields[i].type === "checkbox" && fields[i].checked) || (fields[i].type !== "checkbox" && fields[i].value)) {
        return true;
      }
    }
    return false;
  };
  setInterval(function () {
    var blocks = document.querySelectorAll("[data-refresh]");
    for (var i = 0; i < blocks.length; i++) {
      var block = blocks[i];
      if (!block.id || busy(block) || !window.htmx) { continue; }
      window.htmx.ajax("GET", block.getAttribute("data-refresh"),
                       { target: "#" + block.id, select: "#" + block.id, swap: "outerHTML" });
    }
  }, REFRESH_MS);

  // --- live feed ----------------------------------------------------------------------------------
  var feed = document.getElementById("feed");
  if (feed) {
    var status = document.getElementById("feed-status");
    var since = feed.getAttribute("data-since");
    var lastId = since !== null && since !== "" ? Number(since) : null;
    var delay = 1000;
    var MAX_ITEMS = 500;

    var summary = function (message) {
      var p = message.payload || {};
      var parts = [];
      ["side", "qty", "notional", "symbol", "status", "decision", "decided_by", "filled_qty", "filled_avg_price",
       "severity", "code", "message", "reason"].forEach(function (key) {
        if (p[key] !== undefined && p[key] !== null && p[key] !== "") { parts.push(key + " " + String(p[key])); }
      });
      return parts.join(" · ");
    };

    var show = function (message) {
      var item = document.createElement("li");
      item.className = "event type-" + String(message.message_type).replace(/[^a-z.]/g, "").replace(/\./g, "-");
      item.setAttribute("data-event-id", String(message.event_id));
      var time = document.createElement("time");
      time.textContent = String(message.timestamp || "").replace("T", " ").replace("Z", "");
      var kind = document.createElement("strong");
      kind.textContent = String(message.message_type);
      var agent = document.createElement("span");
      agent.className = "agent";
      agent.textContent = message.agent_id ? String(message.agent_id) : "";
      var text = document.createElement("span");
      text.className = "detail";
      text.textContent = summary(message);
      item.append(time, " ", kind, " ", agent, " ", text);
      feed.insertBefore(item, feed.firstChild);
      while (feed.children.length > MAX_ITEMS) { feed.removeChild(feed.lastChild); }
    };

    var connect = function () {
      var scheme = location.protocol === "https:" ? "wss://" : "ws://";
      var url = scheme + location.host + feed.getAttribute("data-ws") + (lastId !== null ? "?since=" + lastId : "");
      var socket = new WebSocket(url);
      socket.onmessage = function (raw) {
        var message;
        try { message = JSON.parse(raw.data); } catch (error) { return; }
        if (message.message_type === "replay.complete") {
          status.textContent = "live";
          status.className = "live";
          if (lastId === null) { lastId = message.event_id; }
          delay = 1000;
          return;
        }
        if (message.message_type === "stream.overflow") { return; }
        if (typeof message.event_id === "number") { lastId = message.event_id; }
        show(message);
      };
      socket.onclose = function (closed) {
        if (closed.code === 4401) {  // the session ended (logout, expiry, rotation, disable): log in again
          location.href = body.getAttribute("data-root") + "/login";
          return;
        }
        status.textContent = "reconnecting…";
        status.className = "stale";
        setTimeout(connect, delay);
        delay = Math.min(delay * 2, 10000);
      };
    };
    connect();
  }

  // --- equity chart -------------------------------------------------------------------------------
  var chart = document.getElementById("equity-chart");
  var data = document.getElementById("equity-data");
  if (chart && data && window.uPlot) {
    var points = JSON.parse(data.textContent || "[]");
    if (points.length > 1) {
      var xs = points.map(function (p) { return p[0]; });
      var ys = points.map(function (p) { return p[1]; });
      new window.uPlot({
        width: Math.min(chart.clientWidth || 800, 1000), height: 260,
        scales: { x: { time: true } },
        series: [{}, { label: "equity", stroke: "#1f6feb", width: 2 }],
        axes: [{}, { size: 70 }]
      }, [xs, ys], chart);
    } else {
      chart.textContent = "No fills yet: no equity curve.";
    }
  }
})();
