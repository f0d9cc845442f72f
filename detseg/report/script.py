"""The report's inline script: sortable tables, PR curves, confusion matrices, TIDE bars and the
picture viewer, drawn from the page's embedded JSON (``#report-data``) without any library.

A sort can be given in the URL fragment, ``report.html#sort=TABLE_ID:COLUMN:asc|desc``, so a
link (or a headless browser) opens the page sorted.
"""

JS = r"""
(function () {
  "use strict";
  var DATA = JSON.parse(document.getElementById("report-data").textContent);
  var SVGNS = "http://www.w3.org/2000/svg";

  function svg(tag, attrs, text) {
    var node = document.createElementNS(SVGNS, tag);
    for (var k in attrs) { node.setAttribute(k, attrs[k]); }
    if (text !== undefined) { node.textContent = text; }
    return node;
  }
  function html(tag, attrs, text) {
    var node = document.createElement(tag);
    for (var k in attrs) { node.setAttribute(k, attrs[k]); }
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  // ------------------------------------------------------------------ sortable tables
  function cellKey(row, col) {
    var raw = row.cells[col].getAttribute("data-v");
    var n = Number(raw);
    return (raw !== "" && !isNaN(n)) ? n : raw.toLowerCase();
  }
  function sortTable(table, col, dir) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = cellKey(a, col), y = cellKey(b, col);
      var c = (typeof x === typeof y) ? (x < y ? -1 : x > y ? 1 : 0)
                                      : (typeof x === "number" ? -1 : 1);
      return dir === "asc" ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    var heads = table.tHead.rows[0].cells;
    for (var i = 0; i < heads.length; i++) { heads[i].classList.remove("asc", "desc"); }
    heads[col].classList.add(dir);
    table.setAttribute("data-sorted", heads[col].getAttribute("data-col") + ":" + dir);
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      th.addEventListener("click", function () {
        var dir = th.classList.contains("desc") ? "asc" : "desc";
        sortTable(table, col, dir);
      });
    });
  });
  function applyFragment() {
    var m = /sort=([^:&]+):([^:&]+):(asc|desc)/.exec(decodeURIComponent(location.hash));
    if (!m) { return; }
    var table = document.getElementById(m[1]);
    if (!table || !table.tHead) { return; }
    var heads = table.tHead.rows[0].cells;
    for (var i = 0; i < heads.length; i++) {
      if (heads[i].getAttribute("data-col") === m[2]) { sortTable(table, i, m[3]); return; }
    }
  }

  // ------------------------------------------------------------------ PR curves
  function drawPR(host, pr, k) {
    host.textContent = "";
    var W = 440, H = 320, L = 46, R = 14, T = 14, B = 40;
    var chart = svg("svg", {width: W, height: H, class: "chart pr-chart",
                            viewBox: "0 0 " + W + " " + H});
    var x = function (v) { return L + v * (W - L - R); };
    var y = function (v) { return H - B - v * (H - T - B); };
    for (var t = 0; t <= 5; t++) {
      var v = t / 5;
      chart.appendChild(svg("line", {x1: x(0), x2: x(1), y1: y(v), y2: y(v),
                                     stroke: "#eceff3"}));
      chart.appendChild(svg("text", {x: L - 6, y: y(v) + 4, "text-anchor": "end"},
                            v.toFixed(1)));
      chart.appendChild(svg("text", {x: x(v), y: H - B + 15, "text-anchor": "middle"},
                            v.toFixed(1)));
    }
    chart.appendChild(svg("rect", {x: x(0), y: y(1), width: x(1) - x(0), height: y(0) - y(1),
                                   fill: "none", stroke: "#9aa3b2"}));
    chart.appendChild(svg("text", {x: x(0.5), y: H - 6, "text-anchor": "middle"}, "recall"));
    chart.appendChild(svg("text", {x: 12, y: y(0.5), "text-anchor": "middle",
                                   transform: "rotate(-90 12 " + y(0.5) + ")"}, "precision"));
    var curves = k < 0 ? [pr.mean50, pr.mean5095] : [pr.iou50[k], pr.iou5095[k]];
    var colors = ["#2563eb", "#ea580c"], names = ["IoU 0.5", "IoU 0.5:0.95"];
    var drawn = 0;
    curves.forEach(function (c, i) {
      if (!c) { return; }
      var pts = c.map(function (p, j) { return x(pr.recall[j]) + "," + y(Math.max(p, 0)); });
      chart.appendChild(svg("polyline", {points: pts.join(" "), fill: "none",
                                         stroke: colors[i], "stroke-width": 2}));
      var ly = H - B - 34 + 16 * i;
      chart.appendChild(svg("line", {x1: L + 10, x2: L + 30, y1: ly, y2: ly, stroke: colors[i],
                                     "stroke-width": 2}));
      chart.appendChild(svg("text", {x: L + 35, y: ly + 4}, names[i]));
      drawn++;
    });
    if (!drawn) {
      chart.appendChild(svg("text", {x: x(0.5), y: y(0.5), "text-anchor": "middle"},
                            "no curve: no ground truth or no detection"));
    }
    host.appendChild(chart);
  }
  Array.prototype.forEach.call(document.querySelectorAll(".pr-view"), function (view) {
    var pr = DATA[view.getAttribute("data-src")];
    var pick = view.querySelector("select"), host = view.querySelector(".pr-host");
    pick.appendChild(html("option", {value: -1}, "all classes (mean)"));
    pr.classes.forEach(function (name, k) {
      pick.appendChild(html("option", {value: k}, name));
    });
    pick.addEventListener("change", function () { drawPR(host, pr, Number(pick.value)); });
    drawPR(host, pr, -1);
  });

  // ------------------------------------------------------------------ confusion matrices
  function drawMatrix(host, m, mode) {
    host.textContent = "";
    var table = html("table", {class: "matrix", "data-mode": mode});
    var head = html("tr", {});
    head.appendChild(html("th", {class: "row"}, m.rowLabel + " \\ " + m.colLabel));
    m.labels.forEach(function (name) { head.appendChild(html("th", {class: "colh"}, name)); });
    table.appendChild(html("thead", {})).appendChild(head);
    var body = table.appendChild(html("tbody", {}));
    m.counts.forEach(function (row, i) {
      var total = row.reduce(function (a, b) { return a + b; }, 0);
      var tr = html("tr", {});
      tr.appendChild(html("th", {class: "row"}, m.labels[i]));
      row.forEach(function (count, j) {
        var share = total ? count / total : 0;
        var text = count === 0 ? "" : (mode === "rows" ? share.toFixed(2) : String(count));
        var td = html("td", {title: m.labels[i] + " -> " + m.labels[j] + ": " + count +
                             " (" + (100 * share).toFixed(1) + "% of the row)"}, text);
        td.style.background = "rgba(37,99,235," + (0.08 + 0.92 * share).toFixed(3) + ")";
        if (count === 0) { td.style.background = "#fff"; }
        if (share > 0.5) { td.style.color = "#fff"; }
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
    host.appendChild(table);
  }
  Array.prototype.forEach.call(document.querySelectorAll(".matrix-view"), function (view) {
    var m = DATA[view.getAttribute("data-src")];
    var host = view.querySelector(".matrix-host");
    var buttons = view.querySelectorAll(".toggle button");
    Array.prototype.forEach.call(buttons, function (button) {
      button.addEventListener("click", function () {
        Array.prototype.forEach.call(buttons, function (b) { b.classList.remove("on"); });
        button.classList.add("on");
        drawMatrix(host, m, button.getAttribute("data-mode"));
      });
    });
    drawMatrix(host, m, view.getAttribute("data-mode") || "counts");
  });

  // ------------------------------------------------------------------ TIDE bars
  function drawBars(host, groups) {
    var rows = [];
    groups.forEach(function (g) {
      rows.push([g.title, null]);
      g.items.forEach(function (it) { rows.push(it); });
    });
    var max = 1;
    rows.forEach(function (r) { if (r[1] !== null) { max = Math.max(max, r[1]); } });
    var W = 460, rowH = 22, L = 78, H = rows.length * rowH + 10;
    var chart = svg("svg", {width: W, height: H, class: "chart tide-chart",
                            viewBox: "0 0 " + W + " " + H});
    rows.forEach(function (r, i) {
      var yy = 6 + i * rowH;
      if (r[1] === null) {
        chart.appendChild(svg("text", {x: 0, y: yy + 14, "font-weight": "bold"}, r[0]));
        return;
      }
      var w = Math.max(0, r[1]) / max * (W - L - 60);
      chart.appendChild(svg("text", {x: L - 6, y: yy + 14, "text-anchor": "end"}, r[0]));
      chart.appendChild(svg("rect", {x: L, y: yy + 3, width: w, height: rowH - 7,
                                     fill: r[2] || "#2563eb", class: "bar"}));
      chart.appendChild(svg("text", {x: L + w + 5, y: yy + 14}, r[1].toFixed(2)));
    });
    host.appendChild(chart);
  }
  Array.prototype.forEach.call(document.querySelectorAll(".tide-view"), function (view) {
    drawBars(view, DATA[view.getAttribute("data-src")]);
  });

  // ------------------------------------------------------------------ picture viewer
  var box = document.getElementById("lightbox");
  document.addEventListener("click", function (event) {
    var img = event.target;
    if (img.tagName === "IMG" && img.classList.contains("zoom")) {
      box.querySelector("img").src = img.getAttribute("data-full") || img.src;
      box.querySelector("div").textContent = img.alt;
      box.classList.add("open");
    } else if (box.contains(img)) {
      box.classList.remove("open");
    }
  });
  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape") { box.classList.remove("open"); }
  });

  applyFragment();
  window.addEventListener("hashchange", applyFragment);
  document.body.setAttribute("data-ready", "1");
})();
"""
