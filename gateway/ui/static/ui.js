/* The dashboard's behaviour, beside htmx (no inline script: the pages' policy forbids it).
 *
 * Live jobs: every element with data-job and data-active (a row of the list, the panel of a
 * job's page) is followed over one server-sent event stream, /ui/events?job=... (under the
 * gateway's public path, the body's data-root); when an event's seq is newer than the
 * element's data-seq, the element is told "sg:changed" and htmx fetches its new rendering;
 * a rendering that arrives older than the stream's last word is fetched once more. The stream
 * is closed once no followed job is active.
 *
 * Charts: every figure.chart is drawn with uPlot from the JSON at its data-series URL, and
 * redrawn every 30 seconds.
 */
(function () {
  "use strict";

  var source = null;
  var followed = "";

  function activeJobs() {
    var ids = [];
    document.querySelectorAll("[data-job][data-active]").forEach(function (el) {
      var id = el.getAttribute("data-job");
      if (ids.indexOf(id) < 0) { ids.push(id); }
    });
    return ids.sort();
  }

  // The newest seq the stream told of each job, and the seq each job was last fetched again
  // for after a swap: a change told while the element's fetch was in flight is fetched by
  // htmx for the element the swap then replaced, so the new element may render an older seq.
  var newest = {};
  var refetched = {};

  function onJob(event) {
    var change = JSON.parse(event.data);
    newest[change.id] = Math.max(newest[change.id] || 0, change.seq);
    document.querySelectorAll('[data-job="' + change.id + '"]').forEach(function (el) {
      var seen = parseInt(el.getAttribute("data-seq") || "0", 10);
      if (change.seq > seen) {
        el.setAttribute("data-seq", String(change.seq));
        htmx.trigger(el, "sg:changed");
      }
    });
  }

  function catchUp() {
    document.querySelectorAll("[data-job][data-seq]").forEach(function (el) {
      var id = el.getAttribute("data-job");
      var seen = parseInt(el.getAttribute("data-seq") || "0", 10);
      if ((newest[id] || 0) > seen && refetched[id] !== newest[id]) {
        refetched[id] = newest[id];  // once per told seq: a rendering never loops
        el.setAttribute("data-seq", String(newest[id]));
        htmx.trigger(el, "sg:changed");
      }
    });
  }

  function follow() {
    var ids = activeJobs();
    var key = ids.join(",");
    if (key === followed) { return; }
    if (source !== null) { source.close(); source = null; }
    followed = key;
    if (ids.length === 0) { return; }
    var query = ids.map(function (id) { return "job=" + encodeURIComponent(id); }).join("&");
    // The gateway's public path (behind a proxy's prefix), from the page's body.
    var root = document.body.getAttribute("data-root") || "";
    source = new EventSource(root + "/ui/events?" + query);
    source.addEventListener("job", onJob);
    source.addEventListener("error", function () {
      // The stream ended (every job finished, or the sign-in expired): stop reconnecting
      // unless some job shown is still active.
      if (activeJobs().length === 0 && source !== null) { source.close(); source = null; followed = ""; }
    });
  }

  var palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

  function drawCharts() {
    var charts = document.querySelectorAll("figure.chart[data-series]");
    if (charts.length === 0 || typeof uPlot === "undefined") { return; }
    var url = charts[0].getAttribute("data-series");
    fetch(url, { credentials: "same-origin" }).then(function (r) {
      if (!r.ok) { throw new Error("series: " + r.status); }
      return r.json();
    }).then(function (body) {
      charts.forEach(function (figure) {
        var metric = figure.getAttribute("data-metric");
        var values = body[metric];
        var series = [{}];
        var data = [body.t];
        body.services.forEach(function (service, i) {
          series.push({ label: service, stroke: palette[i % palette.length], width: 2, spanGaps: metric !== "finished" });
          data.push(values[service]);
        });
        if (body.services.length === 0) {
          series.push({ label: "no jobs", stroke: "#999" });
          data.push(body.t.map(function () { return 0; }));
        }
        var old = figure.querySelector(".uplot");
        if (old !== null) { old.remove(); }
        var width = Math.max(figure.clientWidth - 16, 300);
        new uPlot({ width: width, height: 200, series: series, scales: { x: { time: true } },
                    axes: [{}, { label: figure.getAttribute("data-unit") }] }, data, figure);
        figure.setAttribute("data-drawn", String(Date.now()));
      });
    }).catch(function (err) { console.warn(err); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    follow();
    htmx.onLoad(function () { window.setTimeout(function () { catchUp(); follow(); }, 0); });
    drawCharts();
    if (document.querySelector("figure.chart")) { window.setInterval(drawCharts, 30000); }
  });
})();
