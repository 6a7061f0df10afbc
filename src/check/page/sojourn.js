// The live USE table: polls api/use every two seconds and redraws.
"use strict";

const POLL_MS = 2000;
const body = document.querySelector("#use tbody");
const status = document.getElementById("status");
const all = document.getElementById("all");
let last = null;

function el(tag, attrs, children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children || []) e.append(c);
  return e;
}

function svgEl(tag, attrs) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

// A scale's top, short: 1, 2.5, 40, 1.2k.
function short(v) {
  if (v >= 1000) return `${+(v / 1000).toPrecision(2)}k`;
  return `${+v.toPrecision(2)}`;
}

// Utilization as a line on 0–100 %, saturation as an area; saturation that
// is a count (drops, overflows) is scaled to its own maximum, which the
// chart's caption states, so two rows' charts are never read as one scale.
function sparkline(points) {
  const w = 160, h = 28;
  const svg = svgEl("svg", { class: "spark", width: w, height: h, viewBox: `0 0 ${w} ${h}` });
  if (!points || points.length < 2) {
    return el("div", { class: "chart" }, [svg, el("span", { class: "scale" }, ["collecting history…"])]);
  }
  const n = points.length;
  const x = (i) => (i / (n - 1)) * w;
  const sMax = Math.max(1, ...points.map((p) => p.s || 0));
  const y = (v, max) => h - 1 - (Math.min(v, max) / max) * (h - 2);
  const area = points.map((p, i) => `${x(i)},${y(p.s || 0, sMax)}`);
  svg.append(svgEl("polygon", { class: "s", points: `0,${h} ${area.join(" ")} ${w},${h}` }));
  const line = points.filter((p) => p.u !== null).map((p, i) => `${x(points.indexOf(p))},${y(p.u, 1)}`);
  if (line.length > 1) svg.append(svgEl("polyline", { class: "u", points: line.join(" ") }));
  const scale = `${line.length > 1 ? "utilization 0–100 %, " : ""}saturation 0–${short(sMax)}`;
  const title = svgEl("title", {});
  title.textContent = `${scale}, last ${n} samples`;
  svg.append(title);
  return el("div", { class: "chart" }, [svg, el("span", { class: "scale" }, [scale])]);
}

function text(signal) {
  return signal ? signal.text : "–";
}

function render(view) {
  last = view;
  document.getElementById("window").textContent = view.window_seconds;
  if (!view.ready) {
    status.dataset.state = "loading";
    status.textContent = "Collecting the first snapshots…";
    return;
  }
  const report = view.report;
  const time = new Date().toLocaleTimeString();
  if (report.findings.length) {
    status.dataset.state = "findings";
    const n = report.findings.length;
    status.textContent = `${n} finding${n === 1 ? "" : "s"}: ${report.findings.join(", ")} — updated ${time}`;
  } else {
    status.dataset.state = "clear";
    status.textContent = `Nothing saturated, erroring or slow — updated ${time}`;
  }
  const rows = [];
  for (const r of report.resources) {
    if (!all.checked && r.verdict === "ok" && !r.headline) continue;
    const tr = el("tr", { class: r.verdict, "data-resource": r.resource, "data-kind": r.kind }, [
      el("td", {}, [r.resource]),
      el("td", { class: "num" }, [text(r.utilization)]),
      el("td", { class: "num" }, [text(r.saturation)]),
      el("td", { class: "num" }, [text(r.errors)]),
      el("td", { class: "verdict" }, [r.verdict]),
      el("td", {}, [sparkline(view.history[r.resource])]),
    ]);
    rows.push(tr);
    if (r.verdict !== "ok" && r.evidence.length) {
      const list = el("ul", {}, r.evidence.map((e) => el("li", {}, [e])));
      rows.push(el("tr", { class: "evidence" }, [el("td", { colspan: 6 }, [list])]));
    }
  }
  body.replaceChildren(...rows);
}

async function poll() {
  try {
    const res = await fetch(all.checked ? "api/use?all=1" : "api/use", { cache: "no-store" });
    if (!res.ok) throw new Error(`api/use answered ${res.status}`);
    render(await res.json());
  } catch (e) {
    status.dataset.state = "error";
    status.textContent = `Cannot reach sojourn: ${e.message}`;
  }
  setTimeout(poll, POLL_MS);
}

// Every resource's history is fetched only while asked for.
all.addEventListener("change", () => last && render(last));
poll();
