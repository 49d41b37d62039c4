// The emotion-av demo page: send a file (or a webcam recording) to POST /predict and draw
// the answer. Plain JavaScript, no build step, nothing loaded from elsewhere.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";
  const COLORS = {
    neutral: "#8c95a6", happy: "#f2b705", sad: "#3b6fd8", angry: "#d63b3b",
    fearful: "#8e44ad", disgust: "#2e9e5b", surprised: "#f07f1d",
  };
  const EXTRA = ["#17becf", "#bcbd22", "#e377c2", "#7f7f7f", "#9467bd"];
  let classes = [];          // output order, from GET /v1/models
  let busy = false;
  let previewUrl = null;

  function color(name, i) {
    return COLORS[name] || EXTRA[i % EXTRA.length];
  }

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    return node;
  }

  function pct(p) {
    return (100 * p).toFixed(1) + " %";
  }

  function setStatus(text) {
    $("status").textContent = text;
  }

  function showError(code, message) {
    const box = $("error");
    box.replaceChildren();
    if (code) {
      box.append(el("code", {}, code), document.createTextNode(": "));
    }
    box.append(document.createTextNode(message));
    box.dataset.code = code || "";
    box.hidden = false;
  }

  function headers() {
    const key = $("api-key").value.trim();
    return key ? { "X-API-Key": key } : {};
  }

  async function loadModel() {
    try {
      const r = await fetch("/v1/models");
      if (!r.ok) return;
      const m = (await r.json()).models[0];
      classes = m.classes || [];
      $("model-info").textContent = `Model ${m.name} ${m.version}.`;
    } catch (e) { /* the page still works: classes then come from the answer */ }
  }

  // -- sending ------------------------------------------------------------------------------
  async function send(blob, name) {
    if (busy) return;
    busy = true;
    $("error").hidden = true;
    $("result").hidden = true;
    document.body.dataset.state = "busy";
    const params = new URLSearchParams();
    if ($("timeline").checked) params.set("timeline", "true");
    if ($("segment").value) params.set("segment_s", $("segment").value);
    const form = new FormData();
    form.append("file", blob, name);
    const started = performance.now();
    setStatus(`Sending ${name} (${(blob.size / 1048576).toFixed(1)} MB)…`);
    try {
      const r = await fetch("/predict" + (params.toString() ? "?" + params : ""),
                            { method: "POST", body: form, headers: headers() });
      let body = null;
      try { body = await r.json(); } catch (e) { body = null; }
      if (!r.ok) {
        const err = (body && body.error) || {};
        showError(err.code || `http_${r.status}`, err.message || `the server answered ${r.status}`);
        setStatus(`${name}: refused (${r.status}).`);
        document.body.dataset.state = "error";
        return;
      }
      render(body);
      setStatus(`${name}: answered in ${((performance.now() - started) / 1000).toFixed(1)} s.`);
      document.body.dataset.state = "done";
    } catch (e) {
      showError("network_error", "the server could not be reached: " + e.message);
      setStatus("");
      document.body.dataset.state = "error";
    } finally {
      busy = false;
    }
  }

  function choose(file) {
    if (!file) return;
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = URL.createObjectURL(file);
    const video = $("preview");
    video.src = previewUrl;
    video.hidden = false;
    send(file, file.name);
  }

  // -- drawing the answer -------------------------------------------------------------------
  function order(probs) {
    const known = classes.filter((c) => c in probs);
    return known.concat(Object.keys(probs).filter((c) => !known.includes(c)));
  }

  function drawBars(figure, probs) {
    const rows = figure.querySelector(".rows");
    rows.replaceChildren();
    if (!probs) {
      figure.hidden = true;
      return;
    }
    const names = order(probs);
    const top = names.reduce((a, b) => (probs[b] > probs[a] ? b : a), names[0]);
    names.forEach((name, i) => {
      const p = probs[name];
      const row = el("div", { class: "bar" + (name === top ? " top" : ""), "data-class": name, "data-p": String(p),
                              role: "meter", "aria-valuemin": "0", "aria-valuemax": "1", "aria-valuenow": String(p),
                              "aria-label": `${name} ${pct(p)}` });
      const track = el("div", { class: "track" });
      const fill = el("div", { class: "fill" });
      fill.style.width = (100 * p).toFixed(2) + "%";
      fill.style.background = color(name, i);
      track.append(fill);
      row.append(el("span", { class: "name" }, name), track, el("span", { class: "value" }, pct(p)));
      rows.append(row);
    });
    figure.hidden = false;
  }

  function drawFrames(frames) {
    const list = $("frames");
    list.replaceChildren();
    $("frames-block").hidden = !frames.length;
    for (const f of frames) {
      const li = el("li", { class: f.face_detected ? "face" : "noface", "data-t": String(f.t) });
      const b = el("button", { type: "button", title: f.face_detected ? "face found" : "no face found" },
                   `${f.t.toFixed(2)} s${f.face_detected ? "" : " (no face)"}`);
      b.addEventListener("click", () => {
        const video = $("preview");
        if (!video.hidden) { video.currentTime = f.t; video.pause(); }
      });
      li.append(b);
      list.append(li);
    }
  }

  function drawTimeline(segments, duration) {
    const block = $("timeline-block");
    const chart = $("timeline-chart");
    const legend = $("timeline-legend");
    chart.replaceChildren();
    legend.replaceChildren();
    if (!segments || !segments.length) {
      block.hidden = true;
      return;
    }
    const W = 900, H = 240, L = 40, R = 10, T = 10, B = 44;
    const end = Math.max(duration || 0, segments[segments.length - 1].end_s);
    const x = (t) => L + (W - L - R) * (t / end);
    const y = (p) => T + (H - T - B) * (1 - p);
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "probability of each emotion over time" });
    for (const p of [0, 0.5, 1]) {
      root.append(svg("line", { class: "axis", x1: L, x2: W - R, y1: y(p), y2: y(p) }));
      const t = svg("text", { x: L - 6, y: y(p) + 4, "text-anchor": "end" });
      t.textContent = p.toFixed(1);
      root.append(t);
    }
    // Segment bands with their label underneath.
    segments.forEach((s, i) => {
      root.append(svg("line", { class: "axis", x1: x(s.start_s), x2: x(s.start_s), y1: T, y2: H - B }));
      const lab = svg("text", { x: (x(s.start_s) + x(s.end_s)) / 2, y: H - B + 14, "text-anchor": "middle",
                                "data-segment": i });
      lab.textContent = s.label;
      root.append(lab);
      const tick = svg("text", { x: x(s.start_s), y: H - B + 30, "text-anchor": "middle" });
      tick.textContent = s.start_s.toFixed(0) + " s";
      root.append(tick);
    });
    const names = order(segments[0].probabilities);
    names.forEach((name, i) => {
      // A step per segment: the segment's probability over its span.
      const pts = [];
      for (const s of segments) {
        const p = s.probabilities[name] || 0;
        pts.push(`${x(s.start_s).toFixed(1)},${y(p).toFixed(1)}`, `${x(s.end_s).toFixed(1)},${y(p).toFixed(1)}`);
      }
      root.append(svg("polyline", { points: pts.join(" "), fill: "none", stroke: color(name, i),
                                    "stroke-width": 2, "data-class": name }));
      const key = el("span", {}, name);
      key.style.setProperty("--swatch", color(name, i));
      legend.append(key);
    });
    chart.append(root);
    block.hidden = false;
  }

  function render(body) {
    $("label").textContent = body.label;
    const mods = body.modalities || {};
    const trust = (body.reliability || {}).audio;
    const audioFact = mods.audio === "out_of_domain"
      ? `audio: out of domain (trusted ${trust.toFixed(2)}: a voice unlike the training voices)`
      : `audio: ${mods.audio}`;
    const faceFact = mods.face === "low_quality"
      ? "face: low quality (only turned or blurred faces were found)"
      : `face: ${mods.face}`;
    const facts = [`${body.duration_s.toFixed(2)} s`, audioFact, faceFact];
    if (body.model) facts.push(`${body.model.name} ${body.model.version}`);
    $("facts").textContent = facts.join(" · ");
    drawBars($("bars-fused"), body.probabilities);
    const by = body.probabilities_by_modality || {};
    drawBars($("bars-audio"), by.audio || null);
    drawBars($("bars-face"), by.face || null);
    drawFrames(body.summary_frames || []);
    drawTimeline(body.timeline, body.duration_s);
    $("raw").textContent = JSON.stringify(body, null, 2);
    $("result").hidden = false;
  }

  // -- webcam -------------------------------------------------------------------------------
  let recorder = null;

  async function record() {
    if (recorder) { recorder.stop(); return; }
    if (!navigator.mediaDevices || !window.MediaRecorder) {
      showError("no_recorder", "this browser cannot record (a secure context, https or localhost, is needed)");
      return;
    }
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
    } catch (e) {
      showError("no_camera", "the camera or microphone could not be opened: " + e.message);
      return;
    }
    const video = $("preview");
    video.srcObject = stream;
    video.hidden = false;
    video.play().catch(() => {});
    // MP4 first: Chromium's WebM recordings carry no duration, which the service's probe
    // refuses (no_duration); its MP4 ones (VP9 + Opus) have one. WebM where MP4 is not offered.
    const type = ["video/mp4", "video/webm;codecs=vp8,opus", "video/webm"].find((t) => MediaRecorder.isTypeSupported(t));
    recorder = new MediaRecorder(stream, type ? { mimeType: type } : {});
    const chunks = [];
    const seconds = Number($("record-seconds").value);
    recorder.ondataavailable = (e) => { if (e.data.size) chunks.push(e.data); };
    recorder.onstop = () => {
      stream.getTracks().forEach((t) => t.stop());
      clearTimeout(timer);
      recorder = null;
      $("record").textContent = "Record from webcam";
      $("record").classList.remove("recording");
      $("record-state").textContent = "";
      video.srcObject = null;
      const blob = new Blob(chunks, { type: chunks.length ? chunks[0].type : "video/webm" });
      if (previewUrl) URL.revokeObjectURL(previewUrl);
      previewUrl = URL.createObjectURL(blob);
      video.src = previewUrl;
      const ext = blob.type.includes("mp4") ? "mp4" : "webm";
      send(blob, `recording.${ext}`);
    };
    const timer = setTimeout(() => recorder && recorder.stop(), seconds * 1000);
    recorder.start(250);
    $("record").textContent = "Stop";
    $("record").classList.add("recording");
    $("record-state").textContent = `recording ${seconds} s…`;
  }

  // -- wiring -------------------------------------------------------------------------------
  document.addEventListener("DOMContentLoaded", () => {
    const key = sessionStorage.getItem("emotion-av-key");
    if (key) $("api-key").value = key;
    $("api-key").addEventListener("change", () => sessionStorage.setItem("emotion-av-key", $("api-key").value));
    $("file").addEventListener("change", (e) => { choose(e.target.files[0]); e.target.value = ""; });
    const drop = $("drop");
    drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (e) => {
      e.preventDefault();
      drop.classList.remove("over");
      choose(e.dataTransfer.files[0]);
    });
    drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("file").click(); } });
    $("record").addEventListener("click", record);
    // What live.js (the live mode) draws with.
    window.EmotionDemo = { drawBars, color, el, svg, order, showError, apiKey: () => $("api-key").value.trim() };
    loadModel();
    document.body.dataset.state = "idle";
  });
})();
