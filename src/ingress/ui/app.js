// payroute's web console: polls ui/state.json every second, keeps ten
// minutes of history in this tab, and draws the table, the charts and the
// recent events from it. Served by payroute (src/ingress/console.rs), with
// uPlot beside it; nothing comes from the internet.
//
// Rules kept here:
// - Text from payroute (channel ids, error lines) goes into the page through
//   textContent only, never parsed as HTML markup.
// - Nothing here can change payroute without the admin token: the reload
//   button sends the token typed into this tab (sessionStorage) and payroute
//   checks it.
// - Bad input never blanks the page: a failed poll, an odd document or an
//   exception in one part is a banner, and the rest goes on.
(function () {
  "use strict";

  var POLL_MS = 1000;
  var HISTORY_S = 600;
  var TIMEOUT_MS = 5000;
  var MAX_EVENTS = 300;
  var SHOWN_EVENTS = 100;
  var DEFAULT_CHARTED = 8;
  var TOKEN_KEY = "payroute.admin_token";

  // ------------------------------------------------------------ helpers

  function $(id) { return document.getElementById(id); }

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function num(v) { return typeof v === "number" && isFinite(v) ? v : null; }

  function pct(v, digits) {
    v = num(v);
    return v === null ? "—" : (v * 100).toFixed(digits === undefined ? 1 : digits) + " %";
  }

  function ms(v) {
    v = num(v);
    if (v === null) return "—";
    return (v < 10 ? v.toFixed(1) : Math.round(v).toString()) + " ms";
  }

  function fixed(v, d) { v = num(v); return v === null ? "—" : v.toFixed(d); }

  function count(v) { v = num(v); return v === null ? "—" : Math.round(v).toLocaleString("en-US"); }

  function clock(msSinceEpoch) {
    var d = new Date(msSinceEpoch);
    function two(n) { return (n < 10 ? "0" : "") + n; }
    return two(d.getHours()) + ":" + two(d.getMinutes()) + ":" + two(d.getSeconds());
  }

  function sum(obj) {
    var s = 0;
    if (obj && typeof obj === "object") {
      Object.keys(obj).forEach(function (k) { var v = num(obj[k]); if (v !== null) s += v; });
    }
    return s;
  }

  // A stable, distinct colour per channel (golden-angle hues).
  function colour(i) { return "hsl(" + Math.round((i * 137.508) % 360) + ", 62%, 42%)"; }

  // ------------------------------------------------------------ banners

  // Banners by key: set one to a text (or a list of lines), or to null to
  // clear it. Each poll says which of its own it wants.
  var banners = {};

  function banner(key, level, text, lines) {
    var box = $("banners");
    var cur = banners[key];
    if (!text) {
      if (cur) { cur.remove(); delete banners[key]; }
      return;
    }
    if (!cur) {
      cur = el("div", "banner");
      cur.dataset.key = key;
      banners[key] = cur;
      box.appendChild(cur);
    }
    cur.className = "banner " + level;
    cur.textContent = "";
    cur.appendChild(el("span", null, text));
    if (lines && lines.length) {
      var ul = el("ul");
      lines.forEach(function (l) { ul.appendChild(el("li", null, l)); });
      cur.appendChild(ul);
    }
  }

  function oops(where, err) {
    var msg = err && err.message ? err.message : String(err);
    banner("js-" + where, "error", "The console could not draw " + where + ": " + msg + ". The rest goes on.");
  }

  window.addEventListener("error", function (e) {
    banner("js", "error", "The console hit an error: " + (e.message || "unknown") + ".");
  });
  window.addEventListener("unhandledrejection", function (e) {
    var r = e.reason;
    banner("js", "error", "The console hit an error: " + (r && r.message ? r.message : String(r)) + ".");
  });

  // ------------------------------------------------------------ history

  // times[i] in seconds; per channel, arrays aligned with times.
  var hist = { times: [], ch: {}, failovers: [], ambiguous: [], requests: [], success: [] };
  var SERIES = ["share", "success", "latency", "score", "rate"];
  var prev = null;      // the previous document
  var events = [];      // newest last: {t, channel, kind, text}
  var recent = {};      // per channel: {failovers: [[t, n]...], ambiguous: [[t, n]...]}
  var colours = {};     // id -> colour, in the order channels were first seen
  var known = 0;

  function channelHist(id) {
    var h = hist.ch[id];
    if (!h) {
      h = {};
      SERIES.forEach(function (s) {
        h[s] = hist.times.map(function () { return null; });
      });
      hist.ch[id] = h;
    }
    return h;
  }

  function trim(nowS) {
    var cut = 0;
    while (cut < hist.times.length && hist.times[cut] < nowS - HISTORY_S) cut++;
    if (!cut) return;
    hist.times.splice(0, cut);
    ["failovers", "ambiguous", "requests", "success"].forEach(function (k) { hist[k].splice(0, cut); });
    Object.keys(hist.ch).forEach(function (id) {
      SERIES.forEach(function (s) { hist.ch[id][s].splice(0, cut); });
    });
    var limit = (nowS - HISTORY_S) * 1000;
    while (events.length && events[0].t < limit) events.shift();
    Object.keys(recent).forEach(function (id) {
      ["failovers", "ambiguous"].forEach(function (k) {
        var a = recent[id][k];
        while (a.length && a[0][0] < limit) a.shift();
      });
    });
  }

  function addEvent(t, channel, kind, text) {
    events.push({ t: t, channel: channel, kind: kind, text: text });
    if (events.length > MAX_EVENTS) events.splice(0, events.length - MAX_EVENTS);
  }

  function bump(id, kind, t, n) {
    if (!recent[id]) recent[id] = { failovers: [], ambiguous: [] };
    recent[id][kind].push([t, n]);
  }

  function recentCount(id, kind) {
    var r = recent[id];
    if (!r) return 0;
    return r[kind].reduce(function (s, e) { return s + e[1]; }, 0);
  }

  // Folds one document into the history: values, rates, and events from
  // what changed since the previous one.
  function record(doc) {
    var t = num(doc.now_ms) !== null ? doc.now_ms : Date.now();
    var nowS = t / 1000;
    var dt = prev && num(prev.now_ms) !== null ? (t - prev.now_ms) / 1000 : null;
    if (dt !== null && dt <= 0) dt = null;
    var prevCh = {};
    if (prev) prev.channels.forEach(function (c) { prevCh[c.id] = c; });

    // A channel seen for the first time gets nulls for the times before.
    doc.channels.forEach(function (c) { channelHist(c.id); });
    hist.times.push(nowS);
    var seen = {};
    var fo = 0, amb = 0;
    doc.channels.forEach(function (c) {
      seen[c.id] = true;
      var h = channelHist(c.id);
      var p = prevCh[c.id];
      h.share.push(num(c.share) === null ? null : c.share * 100);
      h.success.push(num(c.success_rate) === null ? null : c.success_rate * 100);
      h.latency.push(num(c.latency_ms));
      h.score.push(num(c.score));
      var rate = null;
      if (p && dt && num(c.requests) !== null && num(p.requests) !== null && c.requests >= p.requests) {
        rate = (c.requests - p.requests) / dt;
      }
      h.rate.push(rate);
      if (!p) return;
      // Counters restart when a channel leaves the config and comes back.
      var df = sum(c.failovers) - sum(p.failovers);
      if (df > 0) {
        fo += df;
        bump(c.id, "failovers", t, df);
        var parts = Object.keys(c.failovers || {}).map(function (r) {
          var d = (num(c.failovers[r]) || 0) - (num((p.failovers || {})[r]) || 0);
          return d > 0 ? r + " " + d : null;
        }).filter(Boolean);
        addEvent(t, c.id, "failover", df + (df === 1 ? " payment" : " payments") +
          " failed over from " + c.id + (parts.length ? " (" + parts.join(", ") + ")" : ""));
      }
      var da = (num(c.ambiguous) || 0) - (num(p.ambiguous) || 0);
      if (da > 0) {
        amb += da;
        bump(c.id, "ambiguous", t, da);
        addEvent(t, c.id, "ambiguous", da + (da === 1 ? " ambiguous attempt" : " ambiguous attempts") +
          " on " + c.id + " (fate unknown: queried, reversed if need be)");
      }
      if (p.state !== c.state) {
        addEvent(t, c.id, "state-" + c.state, c.id + ": " + p.state + " → " + c.state);
      }
    });
    Object.keys(hist.ch).forEach(function (id) {
      if (!seen[id]) SERIES.forEach(function (s) { hist.ch[id][s].push(null); });
    });
    if (prev) {
      Object.keys(prevCh).forEach(function (id) {
        if (!seen[id]) addEvent(t, id, "config", id + " left the config");
      });
      doc.channels.forEach(function (c) {
        if (!prevCh[c.id]) addEvent(t, c.id, "config", c.id + " joined the config");
      });
      var r = doc.reload, pr = prev.reload;
      if (r && (!pr || pr.at_ms !== r.at_ms)) {
        addEvent(t, null, r.ok ? "reload" : "reload-refused", r.ok
          ? (r.changed ? "config reloaded: version " + r.version + " in force" : "config reloaded: nothing had changed")
          : "config reload refused (" + r.error_count + (r.error_count === 1 ? " error" : " errors") +
            "): version " + r.version + " stays");
      }
      if (prev.journal && doc.journal && prev.journal.up !== doc.journal.up) {
        addEvent(t, null, doc.journal.up ? "reload" : "reload-refused",
          doc.journal.up ? "the journal answers again" : "the journal stopped answering");
      }
    }
    hist.failovers.push(dt ? fo / dt : null);
    hist.ambiguous.push(dt ? amb / dt : null);
    hist.requests.push(sum(doc.requests));
    hist.success.push(num((doc.requests || {}).success) || 0);
    trim(nowS);
  }

  // Requests per second and the success share over the last `span` seconds
  // of history, from the cumulative outcome counters.
  function overLast(span) {
    var n = hist.times.length;
    if (n < 2) return null;
    var end = n - 1, start = end;
    while (start > 0 && hist.times[end] - hist.times[start - 1] <= span) start--;
    if (start === end) start = end - 1;
    var dt = hist.times[end] - hist.times[start];
    var dr = hist.requests[end] - hist.requests[start];
    var ds = hist.success[end] - hist.success[start];
    if (dt <= 0 || dr < 0 || ds < 0) return null;
    return { rate: dr / dt, success: dr > 0 ? ds / dr : null };
  }

  // ------------------------------------------------------------ header

  function renderFacts(doc) {
    $("f-version").textContent = num(doc.version) === null ? "—" : String(doc.version);
    var r = doc.reload, fr = $("f-reload");
    fr.className = "";
    if (!r) {
      fr.textContent = "none since start";
    } else if (r.ok) {
      fr.textContent = (r.changed ? "took effect" : "nothing changed") + " at " + clock(r.at_ms);
      fr.className = "ok";
    } else {
      fr.textContent = "REFUSED at " + clock(r.at_ms);
      fr.className = "bad";
    }
    var s = doc.state_store || {};
    $("f-store").textContent = (s.backend || "?") + (s.up ? ", up" : ", DOWN");
    $("f-store").className = s.up ? "ok" : "bad";
    var j = doc.journal || {};
    $("f-journal").textContent = j.up ? "answers" : "DOES NOT ANSWER";
    $("f-journal").className = j.up ? "ok" : "bad";
    var n = doc.notifications || {};
    $("f-backlog").textContent = count(n.backlog);
    $("f-updated").textContent = clock(num(doc.now_ms) !== null ? doc.now_ms : Date.now()) + " · every 1 s";
    $("f-updated").className = "ok";

    $("token-rule").textContent = doc.admin_token
      ? "This payroute has an admin token: reloading needs it (sent as Authorization: Bearer)."
      : "This payroute has no admin token configured: anyone who reaches the admin listener may reload.";
  }

  function renderSummary(doc) {
    var w = overLast(10), m = overLast(60);
    $("t-rate").textContent = w ? fixed(w.rate, 1) : "—";
    $("t-success").textContent = m && m.success !== null ? pct(m.success) : "—";
    var fo = 0, amb = 0, foTotal = 0, ambTotal = 0;
    doc.channels.forEach(function (c) {
      fo += recentCount(c.id, "failovers");
      amb += recentCount(c.id, "ambiguous");
      foTotal += sum(c.failovers);
      ambTotal += num(c.ambiguous) || 0;
    });
    $("t-failovers").textContent = count(fo);
    $("t-failovers-note").textContent = "last 10 min · " + count(foTotal) + " since start";
    $("t-ambiguous").textContent = count(amb);
    $("t-ambiguous-note").textContent = "last 10 min · " + count(ambTotal) + " since start";
    var n = doc.notifications || {};
    $("t-backlog").textContent = count(n.backlog);
    $("t-backlog-note").textContent = "waiting · " + count(n.delivered) + " delivered, " +
      count(n.failed) + " given up";
  }

  function renderBanners(doc) {
    banner("poll", null, null);
    var r = doc.reload;
    if (r && !r.ok) {
      var lines = Array.isArray(r.errors) ? r.errors.map(String) : [];
      var more = num(r.error_count) !== null && r.error_count > lines.length
        ? ["… and " + (r.error_count - lines.length) + " more"] : [];
      banner("reload", "error", "The last config reload (" + clock(r.at_ms) + ") was refused; version " +
        r.version + " stays in force. Fix the file and reload again:", lines.concat(more));
    } else {
      banner("reload", null, null);
    }
    banner("journal", "error", doc.journal && doc.journal.up ? null :
      "The journal does not answer: payments are refused (on_unavailable = fail_closed) or go unrecorded " +
      "(fail_open), and notifications wait. /-/ready says 503.");
    var s = doc.state_store || {};
    banner("store", "error", s.up ? null :
      "The state store (" + (s.backend || "?") + ") does not answer: see payroute_state_up and the logs.");
    var chans = doc.channels;
    if (!chans.length) {
      banner("channels", "error", "No channels in the config in force: no payment can be routed.");
    } else if (chans.every(function (c) { return c.state === "disabled"; })) {
      banner("channels", "error", "Every channel is disabled: no payment can be routed.");
    } else if (!chans.some(function (c) { return c.state === "healthy" || c.state === "probing"; })) {
      banner("channels", "error", "No channel is healthy: payments are answered no_channel_available until one heals.");
    } else {
      banner("channels", null, null);
    }
    var ejected = chans.filter(function (c) { return c.state === "ejected"; }).map(function (c) { return c.id; });
    if (ejected.length) {
      var shown = ejected.slice(0, 10).join(", ") + (ejected.length > 10 ? " and " + (ejected.length - 10) + " more" : "");
      banner("ejected", "warn", (ejected.length === 1 ? "Channel " : "Channels ") + shown +
        (ejected.length === 1 ? " is" : " are") + " ejected: no payments go there until a probe succeeds.");
    } else {
      banner("ejected", null, null);
    }
  }

  // ------------------------------------------------------------ table

  var rows = {};        // id -> {tr, cells: {col: td}, check}
  var charted = {};     // id -> whether its series show on the charts
  var sortKey = null, sortDesc = false;
  var COLS = ["id", "state", "share", "success_rate", "latency_ms", "score", "in_flight",
    "daily_use", "ramp", "fee_percent", "failovers", "ambiguous", "attempts"];

  function filterText() { return $("filter").value.trim().toLowerCase(); }

  function matches(id) {
    var f = filterText();
    return !f || id.toLowerCase().indexOf(f) !== -1;
  }

  function makeRow(c) {
    var tr = el("tr");
    tr.dataset.channel = c.id;
    var first = el("td", "chart-col");
    var check = el("input");
    check.type = "checkbox";
    check.setAttribute("aria-label", "show " + c.id + " on the charts");
    check.checked = !!charted[c.id];
    check.addEventListener("change", function () {
      charted[c.id] = check.checked;
      applyVisibility();
    });
    var sw = el("span", "swatch");
    sw.style.backgroundColor = colours[c.id];
    first.appendChild(check);
    first.appendChild(sw);
    tr.appendChild(first);
    var cells = {};
    COLS.forEach(function (col) {
      var td = el("td", col === "id" || col === "state" ? col : "num " + col);
      td.dataset.col = col;
      cells[col] = td;
      tr.appendChild(td);
    });
    return { tr: tr, cells: cells, check: check };
  }

  // Daily use against the channel's daily_cap ("—": no cap), and the share
  // its ramp gives it now ("—": no ramp).
  function dailyUse(c) {
    if (num(c.daily_cap) === null || c.daily_cap <= 0) return "—";
    return pct((num(c.daily_used) || 0) / c.daily_cap, 0);
  }

  function ramp(c) {
    if (num(c.ramp_percent) === null) return "—";
    return c.state === "rolled_back" ? "rolled back" : pct(c.ramp_percent / 100, 1);
  }

  function sortValue(c, key) {
    if (key === "failovers") return recentCount(c.id, "failovers");
    if (key === "ambiguous") return recentCount(c.id, "ambiguous");
    var v = c[key];
    return v === undefined || v === null ? -Infinity : v;
  }

  function renderTable(doc) {
    var tbody = $("channels").tBodies[0];
    var live = {};
    var list = doc.channels.slice();
    if (sortKey) {
      list.sort(function (a, b) {
        var x = sortValue(a, sortKey), y = sortValue(b, sortKey);
        var d = x < y ? -1 : x > y ? 1 : 0;
        return sortDesc ? -d : d;
      });
    }
    list.forEach(function (c, i) {
      live[c.id] = true;
      var row = rows[c.id] || (rows[c.id] = makeRow(c));
      var k = row.cells;
      k.id.textContent = c.id;
      k.state.textContent = c.state || "—";
      k.state.className = "state state-" + (c.state || "unknown");
      k.share.textContent = pct(c.share);
      k.success_rate.textContent = pct(c.success_rate);
      k.latency_ms.textContent = ms(c.latency_ms);
      k.score.textContent = fixed(c.score, 3);
      k.in_flight.textContent = count(c.in_flight);
      k.daily_use.textContent = dailyUse(c);
      k.ramp.textContent = ramp(c);
      k.fee_percent.textContent = num(c.fee_percent) === null ? "—" : c.fee_percent.toFixed(2) + " %";
      k.failovers.textContent = count(recentCount(c.id, "failovers"));
      k.failovers.title = count(sum(c.failovers)) + " since start";
      k.ambiguous.textContent = count(recentCount(c.id, "ambiguous"));
      k.ambiguous.title = count(c.ambiguous) + " since start";
      k.attempts.textContent = count(c.attempts);
      row.tr.hidden = !matches(c.id);
      // Moved only when out of place, so a row being clicked stays put.
      if (tbody.children[i] !== row.tr) tbody.insertBefore(row.tr, tbody.children[i] || null);
    });
    Object.keys(rows).forEach(function (id) {
      if (!live[id]) { rows[id].tr.remove(); delete rows[id]; }
    });
    var empty = $("no-channels");
    if (!doc.channels.length) {
      empty.hidden = false;
      empty.textContent = "No channels in the config in force.";
    } else if (!list.some(function (c) { return matches(c.id); })) {
      empty.hidden = false;
      empty.textContent = "No channel id contains \u201c" + filterText() + "\u201d.";
    } else {
      empty.hidden = true;
    }
  }

  // ------------------------------------------------------------ charts

  var charts = [];       // {plot, key, div}
  var chartIds = "";     // the channel list the charts were built for

  // fmt: a value in the legend; tick: an axis label (short: axes are narrow).
  function trimmed(v) { return v === null ? "" : String(Math.round(v * 1000) / 1000); }
  var CHARTS = [
    { div: "c-share", key: "share", range: [0, 100],
      fmt: function (v) { return v === null ? "—" : v.toFixed(1) + " %"; },
      tick: function (v) { return v === null ? "" : Math.round(v) + "%"; } },
    // Success rates live near the top: 90-100 % unless one falls below.
    { div: "c-success", key: "success",
      range: function (u, lo, hi) { return [lo === null ? 90 : Math.max(0, Math.min(90, Math.floor(lo / 10) * 10)), 100]; },
      fmt: function (v) { return v === null ? "—" : v.toFixed(1) + " %"; },
      tick: function (v) { return v === null ? "" : Math.round(v) + "%"; } },
    { div: "c-latency", key: "latency",
      fmt: function (v) { return v === null ? "—" : v.toFixed(1) + " ms"; }, tick: trimmed },
    { div: "c-score", key: "score",
      fmt: function (v) { return v === null ? "—" : v.toFixed(3); }, tick: trimmed },
    { div: "c-rate", key: "rate",
      fmt: function (v) { return v === null ? "—" : v.toFixed(1); }, tick: trimmed }
  ];

  function chartWidth(div) {
    return Math.max(260, Math.floor(div.getBoundingClientRect().width) - 8);
  }

  function axes(tick) {
    return [
      { stroke: "#555", grid: { stroke: "#eee" }, ticks: { stroke: "#ddd" } },
      { stroke: "#555", grid: { stroke: "#eee" }, ticks: { stroke: "#ddd" }, size: 60,
        values: function (u, vals) { return vals.map(function (v) { return tick(num(v)); }); } }
    ];
  }

  function buildCharts(ids) {
    charts.forEach(function (c) { c.plot.destroy(); });
    charts = [];
    if (typeof window.uPlot !== "function") {
      banner("uplot", "error", "The charting library did not load; the table still updates.");
      return;
    }
    CHARTS.forEach(function (spec) {
      var div = $(spec.div);
      var series = [{}].concat(ids.map(function (id) {
        return {
          label: id, stroke: colours[id], width: 1.5, show: !!charted[id] && matches(id),
          value: function (u, v) { return spec.fmt(num(v)); }
        };
      }));
      var opts = {
        width: chartWidth(div), height: 170, series: series, axes: axes(spec.tick),
        scales: { x: { time: true }, y: spec.range ? { range: spec.range } : { auto: true } },
        legend: { live: true }, cursor: { sync: { key: "payroute" } }
      };
      var plot = new window.uPlot(opts, chartData(spec.key, ids), div);
      charts.push({ plot: plot, key: spec.key, div: div, ids: ids });
    });
    var tdiv = $("c-trouble");
    var tfmt = function (v) { return v === null ? "—" : v.toFixed(2); };
    var tplot = new window.uPlot({
      width: chartWidth(tdiv), height: 170, axes: axes(trimmed),
      series: [{}, { label: "failovers / s", stroke: "#c0392b", width: 1.5, value: function (u, v) { return tfmt(num(v)); } },
        { label: "ambiguous / s", stroke: "#8e44ad", width: 1.5, value: function (u, v) { return tfmt(num(v)); } }],
      scales: { x: { time: true }, y: { auto: true, range: function (u, lo, hi) { return [0, Math.max(1, hi)]; } } },
      legend: { live: true }, cursor: { sync: { key: "payroute" } }
    }, [hist.times, hist.failovers, hist.ambiguous], tdiv);
    charts.push({ plot: tplot, key: null, div: tdiv, ids: [] });
  }

  function chartData(key, ids) {
    return [hist.times].concat(ids.map(function (id) { return channelHist(id)[key]; }));
  }

  function renderCharts(doc) {
    var ids = doc.channels.map(function (c) { return c.id; });
    var sig = ids.join("\n");
    if (sig !== chartIds) {
      // First sight of these channels: chart the first few by share.
      var fresh = ids.filter(function (id) { return !(id in charted); });
      if (fresh.length) {
        var byShare = doc.channels.filter(function (c) { return fresh.indexOf(c.id) !== -1; })
          .sort(function (a, b) { return (num(b.share) || 0) - (num(a.share) || 0); });
        var already = ids.filter(function (id) { return charted[id]; }).length;
        byShare.forEach(function (c) {
          charted[c.id] = ids.length <= DEFAULT_CHARTED + 2 || already < DEFAULT_CHARTED;
          if (charted[c.id]) already++;
          if (rows[c.id]) rows[c.id].check.checked = charted[c.id];
        });
      }
      chartIds = sig;
      buildCharts(ids);
    } else {
      charts.forEach(function (c) {
        c.plot.setData(c.key ? chartData(c.key, c.ids) : [hist.times, hist.failovers, hist.ambiguous]);
      });
    }
    var n = ids.filter(function (id) { return charted[id] && matches(id); }).length;
    $("chart-note").textContent = ids.length
      ? "charts show " + n + " of " + ids.length + " channels: tick them in the first column"
      : "";
  }

  function applyVisibility() {
    charts.forEach(function (c) {
      c.ids.forEach(function (id, i) {
        var show = !!charted[id] && matches(id);
        if (c.plot.series[i + 1].show !== show) c.plot.setSeries(i + 1, { show: show });
      });
    });
    if (prev) {
      try { renderTable(prev); renderCharts(prev); } catch (e) { oops("the channels", e); }
    }
  }

  function resizeCharts() {
    charts.forEach(function (c) { c.plot.setSize({ width: chartWidth(c.div), height: 170 }); });
  }

  // ------------------------------------------------------------ events

  function renderEvents() {
    var ol = $("events");
    ol.textContent = "";
    var shown = events.slice(-SHOWN_EVENTS).reverse();
    shown.forEach(function (e) {
      var li = el("li", "event " + e.kind);
      if (e.channel !== null) li.dataset.channel = e.channel;
      li.appendChild(el("time", null, clock(e.t)));
      li.appendChild(el("span", null, e.text));
      ol.appendChild(li);
    });
    $("no-events").hidden = shown.length > 0;
  }

  // ------------------------------------------------------------ polling

  // The document as the page expects it, or a reason it is not.
  function check(doc) {
    if (!doc || typeof doc !== "object") return "not a JSON object";
    if (!Array.isArray(doc.channels)) return "no channel list";
    for (var i = 0; i < doc.channels.length; i++) {
      var c = doc.channels[i];
      if (!c || typeof c.id !== "string") return "a channel without an id";
    }
    return null;
  }

  var failingSince = null;
  var polls = 0;

  function render(doc) {
    [["the header", renderFacts], ["the banners", renderBanners], ["the channels", renderTable],
      ["the charts", renderCharts], ["the summary", renderSummary], ["the events", renderEvents]]
      .forEach(function (part) {
        try {
          part[1](doc);
          banner("js-" + part[0], null, null);
        } catch (e) {
          oops(part[0], e);
        }
      });
  }

  function failed(why) {
    if (failingSince === null) failingSince = Date.now();
    banner("poll", "error", "Cannot read payroute's state since " + clock(failingSince) + " (" + why +
      "). Showing the last data; retrying every second.");
    $("f-updated").textContent = "stale since " + clock(failingSince);
    $("f-updated").className = "bad";
  }

  function poll() {
    var started = Date.now();
    var ctl = typeof AbortController === "function" ? new AbortController() : null;
    var timer = ctl ? setTimeout(function () { ctl.abort(); }, TIMEOUT_MS) : null;
    fetch("ui/state.json", { cache: "no-store", signal: ctl ? ctl.signal : undefined })
      .then(function (r) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.json();
      })
      .then(function (doc) {
        var bad = check(doc);
        if (bad) throw new Error("unexpected document: " + bad);
        failingSince = null;
        doc.channels.forEach(function (c) {
          if (!colours[c.id]) colours[c.id] = colour(known++);
        });
        record(doc);
        prev = doc;
        render(doc);
        polls++;
        document.body.dataset.polls = String(polls);
      })
      .catch(function (e) {
        failed(e && e.name === "AbortError" ? "no answer in " + TIMEOUT_MS / 1000 + " s" :
          (e && e.message ? e.message : String(e)));
      })
      .then(function () {
        if (timer) clearTimeout(timer);
        setTimeout(poll, Math.max(0, POLL_MS - (Date.now() - started)));
      });
  }

  // ------------------------------------------------------------ actions

  function token() { return $("token").value.trim(); }

  function say(text, level) {
    var out = $("action-result");
    out.textContent = text;
    out.className = level || "";
  }

  function reload() {
    var b = $("reload");
    b.disabled = true;
    say("reloading…");
    var headers = {};
    if (token()) headers.Authorization = "Bearer " + token();
    fetch("reload", { method: "POST", headers: headers, cache: "no-store" })
      .then(function (r) {
        return r.text().then(function (text) {
          var body = null;
          try { body = JSON.parse(text); } catch (e) { body = null; }
          if (r.status === 200 && body) {
            say(body.changed ? "Reloaded: version " + body.version + " in force." :
              "Reloaded: the file had not changed (version " + body.version + ").", "ok");
          } else if (r.status === 401) {
            say("Refused: this payroute needs its admin token for that (missing or wrong token).", "bad");
          } else if (r.status === 400 && body && Array.isArray(body.errors)) {
            say("Refused, the old config stays: " + body.errors.slice(0, 3).join(" · ") +
              (body.errors.length > 3 ? " …" : ""), "bad");
          } else {
            var msg = body && body.error && body.error.message ? body.error.message : "HTTP " + r.status;
            say("Reload failed: " + msg, "bad");
          }
        });
      })
      .catch(function (e) { say("Reload failed: " + (e && e.message ? e.message : String(e)), "bad"); })
      .then(function () { b.disabled = false; });
  }

  function start() {
    var saved = null;
    try { saved = window.sessionStorage.getItem(TOKEN_KEY); } catch (e) { saved = null; }
    if (saved) $("token").value = saved;
    $("token").addEventListener("input", function () {
      try { window.sessionStorage.setItem(TOKEN_KEY, $("token").value); } catch (e) { /* private mode */ }
    });
    $("forget").addEventListener("click", function () {
      $("token").value = "";
      try { window.sessionStorage.removeItem(TOKEN_KEY); } catch (e) { /* private mode */ }
      say("Token forgotten in this tab.");
    });
    $("reload").addEventListener("click", reload);
    $("filter").addEventListener("input", applyVisibility);
    Array.prototype.forEach.call(document.querySelectorAll("#channels th[data-sort]"), function (th) {
      th.addEventListener("click", function () {
        var key = th.dataset.sort;
        if (sortKey === key) sortDesc = !sortDesc; else { sortKey = key; sortDesc = key !== "id" && key !== "state"; }
        Array.prototype.forEach.call(document.querySelectorAll("#channels th"), function (h) {
          h.classList.remove("sorted", "desc");
        });
        th.classList.add("sorted");
        if (sortDesc) th.classList.add("desc");
        if (prev) { try { renderTable(prev); } catch (e) { oops("the channels", e); } }
      });
    });
    if (typeof ResizeObserver === "function") {
      new ResizeObserver(resizeCharts).observe($("charts"));
    } else {
      window.addEventListener("resize", resizeCharts);
    }
    poll();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
