// Draws the panels of a page: fetches each figure (JSON, same origin), Plotly.react in place,
// re-queries every `refresh` while the page is visible. No HTML is ever built from data here:
// errors are shown with textContent.
(function () {
  "use strict";
  var config = JSON.parse(document.getElementById("panel-config").textContent);
  var zone = config.tz;
  if (zone === "browser") {
    try {
      zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
    } catch (err) {
      zone = "UTC";
    }
  }
  var plotConfig = {
    displaylogo: false,
    responsive: true,
    modeBarButtonsToRemove: ["lasso2d", "select2d", "autoScale2d", "toggleSpikelines"]
  };
  var params = new URLSearchParams(window.location.search);
  var revision = 0;
  var timer = null;
  var paused = false;
  var running = null;

  function figureUrl(panel, plot) {
    var url = new URL(panel.src, window.location.href);
    config.controls.forEach(function (name) {
      if (params.has(name)) {
        url.searchParams.set(name, params.get(name));
      }
    });
    if (params.has("range") && !config.fixedRange) {
      url.searchParams.delete("start");
      url.searchParams.delete("end");
    }
    url.searchParams.set("tz", zone);
    if (!url.searchParams.has("width")) {
      url.searchParams.set("width", String(Math.max(100, Math.round(plot.clientWidth || 1000))));
    }
    return url.toString();
  }

  function showError(box, message) {
    var slot = box.querySelector(".panel-error");
    slot.textContent = message;
    slot.hidden = false;
    box.classList.add("failed");
  }

  function draw(panel) {
    var box = document.getElementById(panel.id);
    var plot = box.querySelector(".plot");
    return fetch(figureUrl(panel, plot), { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(function (response) {
        return response.json().then(
          function (body) { return { response: response, body: body }; },
          function () { return { response: response, body: { status: "error", error: "HTTP " + response.status } }; }
        );
      })
      .then(function (answer) {
        var body = answer.body;
        if (!answer.response.ok || body.status === "error" || !body.data) {
          showError(box, body.error || "HTTP " + answer.response.status);
          box.dataset.state = "error";
          return null;
        }
        box.querySelector(".panel-error").hidden = true;
        box.classList.remove("failed");
        body.layout.datarevision = revision;
        return Plotly.react(plot, body.data, body.layout, plotConfig).then(function () {
          box.dataset.state = body.layout.meta && body.layout.meta.empty ? "empty" : "drawn";
          box.dataset.revision = String(revision);
          box.dataset.cache = answer.response.headers.get("x-cache") || "";
        });
      })
      .catch(function (err) {
        showError(box, "could not draw this panel: " + (err && err.message ? err.message : err));
        box.dataset.state = "error";
      });
  }

  function drawAll() {
    if (running) {
      return running;
    }
    revision += 1;
    running = Promise.all(config.panels.map(draw)).then(function () {
      running = null;
      document.body.dataset.revision = String(revision);
      if (window.performance && performance.mark) {
        performance.mark("panels-drawn-" + revision);
      }
    });
    return running;
  }

  function schedule() {
    window.clearTimeout(timer);
    if (config.refresh > 0) {
      timer = window.setTimeout(tick, config.refresh);
    }
  }

  function tick() {
    if (document.hidden) {
      paused = true;
      return;
    }
    drawAll().then(schedule);
  }

  document.addEventListener("visibilitychange", function () {
    if (!document.hidden && paused) {
      paused = false;
      tick();
    }
  });

  Array.prototype.forEach.call(document.querySelectorAll("select[data-param]"), function (select) {
    select.addEventListener("change", function () {
      var name = select.getAttribute("data-param");
      if (name === "refresh") {
        config.refresh = parseRefresh(select.value);
        params.set(name, select.value);
        window.history.replaceState(null, "", "?" + params.toString());
        schedule();
        return;
      }
      params.set(name, select.value);
      if (name === "range") {
        params.delete("start");
        params.delete("end");
        config.fixedRange = false;
      }
      window.history.replaceState(null, "", "?" + params.toString());
      drawAll().then(schedule);
    });
  });

  function parseRefresh(text) {
    var match = /^(\d+)(ms|s|m|h)$/.exec(text || "");
    if (!match) {
      return 0;
    }
    return Number(match[1]) * { ms: 1, s: 1000, m: 60000, h: 3600000 }[match[2]];
  }

  drawAll().then(schedule);
})();
