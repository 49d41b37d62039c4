// Live mode of the demo page: camera and microphone streamed to /v1/stream (docs/streaming.md),
// its rolling answers drawn as bars per modality and a chart of the last minute.
// Audio: an AudioWorklet (pcm-worklet.js) makes PCM16 16 kHz chunks; video: the camera drawn
// on a canvas and sent as JPEG at the server's frame rate. Each binary message carries the
// protocol's 8-byte header.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const AUDIO = 0x41, VIDEO = 0x56, JPEG = 1;
  const HISTORY_S = 60;
  let live = null;   // the running session's state

  function header(kind, fmt, tMs) {
    const h = new DataView(new ArrayBuffer(8));
    h.setUint8(0, kind);
    h.setUint8(1, 1);           // protocol version
    h.setUint8(2, fmt);
    h.setUint8(3, 0);
    h.setUint32(4, Math.max(0, Math.round(tMs)) >>> 0, true);
    return new Uint8Array(h.buffer);
  }

  function message(kind, fmt, tMs, payload) {
    const out = new Uint8Array(8 + payload.byteLength);
    out.set(header(kind, fmt, tMs), 0);
    out.set(new Uint8Array(payload), 8);
    return out.buffer;
  }

  function setState(state, text) {
    document.body.dataset.live = state;
    $("live-state").textContent = text || "";
  }

  function send(data) {
    // Never queue without bound in the browser either: a frame is skipped while the socket is behind.
    if (live && live.ws.readyState === WebSocket.OPEN && live.ws.bufferedAmount < 1 << 20) live.ws.send(data);
  }

  async function startAudio(stream) {
    const ctx = new AudioContext({ sampleRate: 16000 });
    await ctx.audioWorklet.addModule("/static/pcm-worklet.js");
    const node = new AudioWorkletNode(ctx, "pcm16-chunks", { processorOptions: { inputRate: ctx.sampleRate } });
    node.port.onmessage = (e) => send(message(AUDIO, 0, performance.now() - live.t0, e.data));
    const source = ctx.createMediaStreamSource(stream);
    const mute = ctx.createGain();
    mute.gain.value = 0;        // the worklet must be pulled by the graph; nothing is heard
    source.connect(node).connect(mute).connect(ctx.destination);
    await ctx.resume();
    return ctx;
  }

  function startVideo(fps) {
    const video = $("live-video");
    const canvas = document.createElement("canvas");
    const tick = () => {
      if (!live || !video.videoWidth) return;
      const scale = Math.min(1, 480 / Math.max(video.videoWidth, video.videoHeight));
      canvas.width = Math.round(video.videoWidth * scale);
      canvas.height = Math.round(video.videoHeight * scale);
      canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
      const t = performance.now() - live.t0;
      canvas.toBlob(async (blob) => {
        if (blob) send(message(VIDEO, JPEG, t, await blob.arrayBuffer()));
      }, "image/jpeg", 0.85);
    };
    return setInterval(tick, 1000 / fps);
  }

  function drawChart() {
    const chart = $("live-chart");
    const D = window.EmotionDemo;
    chart.replaceChildren();
    const points = live ? live.history : [];
    if (!points.length) return;
    const W = 900, H = 200, L = 40, R = 10, T = 10, B = 26;
    const end = points[points.length - 1].t;
    const start = end - HISTORY_S;
    const x = (t) => L + (W - L - R) * ((t - start) / HISTORY_S);
    const y = (p) => T + (H - T - B) * (1 - p);
    const root = D.svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "the last minute of answers" });
    for (const p of [0, 0.5, 1]) {
      root.append(D.svg("line", { class: "axis", x1: L, x2: W - R, y1: y(p), y2: y(p) }));
      const label = D.svg("text", { x: L - 6, y: y(p) + 4, "text-anchor": "end" });
      label.textContent = p.toFixed(1);
      root.append(label);
    }
    for (let s = 0; s <= HISTORY_S; s += 10) {
      const tick = D.svg("text", { x: x(end - s), y: H - 8, "text-anchor": "middle" });
      tick.textContent = s ? `-${s} s` : "now";
      root.append(tick);
    }
    const names = D.order(points[points.length - 1].p);
    names.forEach((name, i) => {
      const pts = points.filter((q) => q.t >= start)
        .map((q) => `${x(q.t).toFixed(1)},${y(q.p[name] || 0).toFixed(1)}`);
      root.append(D.svg("polyline", { points: pts.join(" "), fill: "none", stroke: D.color(name, i),
                                      "stroke-width": 2, "data-class": name }));
    });
    chart.append(root);
  }

  function onUpdate(u) {
    const D = window.EmotionDemo;
    const body = document.body.dataset;
    body.liveSeq = String(u.seq);
    body.liveFace = String(u.face_found);
    body.liveVoice = String(u.audio_used);
    $("live-label").textContent = u.label || "—";
    const dropped = Object.values(u.dropped).reduce((a, b) => a + b, 0);
    $("live-facts").textContent = [
      `window ${u.window.start_s.toFixed(1)}–${u.window.end_s.toFixed(1)} s`,
      `face: ${u.modalities.face}`, `voice: ${u.modalities.audio}`,
      `update #${u.seq} in ${u.latency_ms.toFixed(0)} ms`, `${dropped} frames dropped`].join(" · ");
    D.drawBars($("live-fused"), u.probabilities);
    D.drawBars($("live-audio"), u.probabilities_by_modality.audio);
    D.drawBars($("live-face"), u.probabilities_by_modality.face);
    if (u.probabilities) {
      live.history.push({ t: u.window.end_s, p: u.probabilities });
      while (live.history.length && live.history[0].t < u.window.end_s - HISTORY_S) live.history.shift();
    }
    drawChart();
  }

  function stop(reason) {
    if (!live) return;
    const s = live;
    live = null;
    clearInterval(s.timer);
    if (s.audio) s.audio.close();
    if (s.stream) s.stream.getTracks().forEach((t) => t.stop());
    if (s.ws.readyState === WebSocket.OPEN) s.ws.send(JSON.stringify({ type: "end" }));
    $("live").textContent = "Start live";
    $("live-video").srcObject = null;
    if (reason) setState("closed", reason);
  }

  async function start() {
    if (live) { stop("stopped"); return; }
    const D = window.EmotionDemo;
    $("error").hidden = true;
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        video: { width: 640, height: 480 },
        audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
      });
    } catch (e) {
      D.showError("no_camera", "the camera or microphone could not be opened: " + e.message);
      return;
    }
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const ws = new WebSocket(scheme + location.host + "/v1/stream");
    ws.binaryType = "arraybuffer";
    live = { ws, stream, history: [], t0: 0, timer: null, audio: null };
    const video = $("live-video");
    video.srcObject = stream;
    video.play().catch(() => {});
    $("live-view").hidden = false;
    $("live").textContent = "Stop live";
    setState("connecting", "connecting…");
    const key = D.apiKey();
    ws.onopen = () => ws.send(JSON.stringify({ type: "open", api_key: key || null, modalities: ["audio", "face"],
                                               update_interval_s: 0.5, window_s: 3, smoothing_s: 1 }));
    ws.onmessage = async (e) => {
      const m = JSON.parse(e.data);
      if (m.type === "ready" && live && live.ws === ws) {
        live.t0 = performance.now();
        try {
          live.audio = await startAudio(stream);
        } catch (err) {
          setState("on", "no audio: " + err.message);
        }
        live.timer = startVideo(m.limits.frame_fps);
        setState("on", `live: ${m.options.window_s} s window, an update every ${m.options.update_interval_s} s`);
      } else if (m.type === "update" && live && live.ws === ws) {
        onUpdate(m);
      } else if (m.type === "summary") {
        setState("closed", `session: ${m.label || "no answer"} over ${m.media_s.toFixed(1)} s`);
      }
    };
    ws.onclose = (e) => {
      if (e.code !== 1000 && e.code !== 1005) D.showError(`ws_${e.code}`, e.reason || "the live session was closed");
      if (live && live.ws === ws) stop(`closed by the server: ${e.code} ${e.reason}`);
      else if (e.code !== 1000) setState("closed", `closed: ${e.code} ${e.reason}`);
    };
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("live").addEventListener("click", start);
    document.body.dataset.live = "off";
  });
})();
