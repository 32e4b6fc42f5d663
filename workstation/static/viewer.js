// ReadingRoom viewer and hotkeys. Loaded once in the page head; works on whatever
// <div id="rr-viewer" data-study="..."> the Gradio page currently shows.
//
// Slices come from /api/viewer/series/<uid>/<i>.png?c=&w=&invert= (windowed on the server);
// the neighbours of the current slice are prefetched, so scrolling shows cached images.
// Keys (when the focus is not in a text field):
//   Up/Down, PageUp/PageDown, Home/End  slice      1..8  window presets      i  invert
//   + / -  zoom      0  reset view      h  AI heatmap on/off      F4  start/stop dictation
// Mouse: wheel = slice, Ctrl+wheel = zoom, left drag = pan, right drag = window/level.
(function () {
  "use strict";
  const PRESET_KEYS = ["brain", "subdural", "stroke", "bone", "lung", "mediastinum", "abdomen", "liver"];
  const PREFETCH = 6;
  const V = (window.rrViewer = {
    study: null, data: null, series: null, info: null, index: 0, c: 0, w: 1, invert: false,
    zoom: 1, panX: 0, panY: 0, overlay: null, opacity: 0.5, showOverlay: true,
    cache: new Map(), lastRenderMs: null, renders: 0,
  });

  function $(sel, root) { return (root || document).querySelector(sel); }
  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    Object.entries(attrs || {}).forEach(([k, v]) => e.setAttribute(k, v));
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function root() { return document.getElementById("rr-viewer"); }

  function sliceUrl(i) {
    const q = `c=${V.c.toFixed(1)}&w=${V.w.toFixed(1)}&invert=${V.invert ? 1 : 0}`;
    return `/api/viewer/series/${encodeURIComponent(V.series)}/${i}.png?${q}`;
  }

  function fetchSlice(i) {
    const url = sliceUrl(i);
    if (!V.cache.has(url)) {
      const img = new Image();
      img.decoding = "async";
      const ready = new Promise((ok, fail) => { img.onload = () => ok(img); img.onerror = fail; });
      img.src = url;
      V.cache.set(url, ready);
      if (V.cache.size > 400) V.cache.delete(V.cache.keys().next().value);
    }
    return V.cache.get(url);
  }

  function prefetch() {
    if (!V.info) return;
    for (let d = 1; d <= PREFETCH; d++) {
      if (V.index + d < V.info.slices) fetchSlice(V.index + d);
      if (V.index - d >= 0) fetchSlice(V.index - d);
    }
  }

  async function show() {
    const r = root();
    if (!r || !V.info) return;
    const started = performance.now();
    const want = V.index, url = sliceUrl(want);
    let img;
    try { img = await fetchSlice(want); } catch (e) { status(`Slice ${want + 1} could not be loaded.`); return; }
    if (want !== V.index || url !== sliceUrl(V.index)) return;   // the user has moved on
    const target = $("#rr-image", r);
    target.src = img.src;
    target.dataset.index = String(want);
    V.lastRenderMs = performance.now() - started;
    V.renders += 1;
    target.dataset.renderMs = V.lastRenderMs.toFixed(1);
    const slider = $("#rr-slice", r);
    if (slider && Number(slider.value) !== want) slider.value = String(want);
    showOverlay();
    status();
    prefetch();
  }

  function showOverlay() {
    const ov = $("#rr-overlay", root());
    if (!ov) return;
    if (V.overlay && V.showOverlay) {
      ov.src = `/api/viewer/heatmap/${V.overlay}/${V.index}.png`;
      ov.style.opacity = String(V.opacity);
      ov.style.display = "";
    } else {
      ov.style.display = "none";
    }
  }

  function applyTransform() {
    const stage = $("#rr-transform", root());
    if (stage) stage.style.transform = `translate(${V.panX}px, ${V.panY}px) scale(${V.zoom})`;
    status();
  }

  function status(message) {
    const s = $("#rr-status", root());
    if (!s) return;
    if (message) { s.textContent = message; return; }
    const n = V.info ? V.info.slices : 0;
    s.textContent = `Slice ${V.index + 1}/${n}   W ${Math.round(V.w)} L ${Math.round(V.c)}` +
      `${V.invert ? "   inverted" : ""}   zoom ${V.zoom.toFixed(2)}×` +
      (V.lastRenderMs !== null ? `   ${V.lastRenderMs.toFixed(0)} ms` : "");
    s.dataset.index = String(V.index);
    s.dataset.window = `${Math.round(V.c)}/${Math.round(V.w)}`;
  }

  function setIndex(i) {
    if (!V.info) return;
    V.index = Math.max(0, Math.min(V.info.slices - 1, i));
    show();
  }

  function setWindow(c, w) {
    V.c = c; V.w = Math.max(1, w);
    const r = root();
    const ci = $("#rr-wc", r), wi = $("#rr-ww", r);
    if (ci) ci.value = String(Math.round(V.c));
    if (wi) wi.value = String(Math.round(V.w));
    show();
  }

  function preset(name) {
    const p = V.data && V.data.presets[name];
    if (!p) return;
    const r = root();
    r.querySelectorAll(".rr-preset").forEach((b) => b.classList.toggle("active", b.dataset.preset === name));
    r.dataset.preset = name;
    setWindow(p[0], p[1]);
  }

  async function openSeries(uid) {
    const r = root();
    V.series = uid; V.info = null;
    status("Loading series…");
    const resp = await fetch(`/api/viewer/series/${encodeURIComponent(uid)}/info`);
    if (!resp.ok) { status(`This series cannot be shown: ${(await resp.json()).detail || resp.status}`); return; }
    V.info = await resp.json();
    V.invert = V.info.invert;
    V.zoom = 1; V.panX = 0; V.panY = 0;
    applyTransform();
    r.querySelectorAll(".rr-series").forEach((b) => b.classList.toggle("active", b.dataset.uid === uid));
    const slider = $("#rr-slice", r);
    slider.max = String(V.info.slices - 1);
    V.index = Math.floor((V.info.slices - 1) / 2);
    slider.value = String(V.index);
    const ai = (V.data.ai || []).find((f) => f.heatmap && f.series_uid === uid && f.positive) ||
               (V.data.ai || []).find((f) => f.heatmap && f.series_uid === uid);
    V.overlay = ai ? ai.id : null;
    $("#rr-ai-controls", r).style.display = V.overlay ? "" : "none";
    renderTags();
    setWindow(V.info.window[0], V.info.window[1]);
  }

  function renderTags() {
    const box = $("#rr-tags", root());
    if (!box || !V.info) return;
    box.replaceChildren();
    Object.entries(V.info.tags).forEach(([k, v]) => {
      const row = el("div", { class: "rr-tag" });
      row.append(el("span", { class: "rr-k" }, k), el("span", { class: "rr-v" }, v));
      box.append(row);
    });
  }

  async function openStudy(uid) {
    const r = root();
    V.study = uid; V.cache.clear();
    const resp = await fetch(`/api/viewer/study/${encodeURIComponent(uid)}`);
    if (!resp.ok) { status("This study cannot be opened."); return; }
    V.data = await resp.json();
    const list = $("#rr-series-list", r);
    list.replaceChildren();
    V.data.series.forEach((s) => {
      const b = el("button", { class: "rr-series", "data-uid": s.uid, type: "button" },
        `${s.modality} ${s.description} (${s.images})`);
      b.addEventListener("click", () => openSeries(s.uid));
      list.append(b);
    });
    const info = $("#rr-info", r);
    info.replaceChildren();
    const i = V.data.info;
    [["Patient", `${i.patient_name} (${i.patient_id}) ${i.sex || ""} ${i.birth_date || ""}`],
     ["Study", `${i.description} ${i.date}, accession ${i.accession}`], ["Site", i.site],
     ["Referring", i.referring_physician], ["Ordering physician", i.ordering_physician || ""],
     ["Order priority", i.order_priority], ["Indication", i.indication || ""], ["Laterality", i.laterality || ""],
     ["Protocol", i.protocol || ""], ["Contrast allergy", i.contrast_allergy || ""],
     ["Order", i.linked_order === false ? "NOT LINKED to an order" : ""]]
      .filter(([, v]) => v && v.trim()).forEach(([k, v]) => {
        const row = el("div", { class: "rr-tag" });
        row.append(el("span", { class: "rr-k" }, k), el("span", { class: "rr-v" }, v));
        info.append(row);
      });
    const ai = $("#rr-ai", r);
    ai.replaceChildren();
    (V.data.ai || []).forEach((f) => {
      ai.append(el("div", { class: f.positive ? "rr-ai-pos" : "rr-ai-neg" },
        `${f.finding}: ${(f.probability * 100).toFixed(0)}% ${f.positive ? "POSITIVE" : "negative"} ` +
        `(${f.model} ${f.version}, UNVERIFIED)`));
    });
    if (!(V.data.ai || []).length) ai.append(el("div", {}, `AI: ${i.ai_status}`));
    const priors = $("#rr-priors", r);
    priors.replaceChildren();
    (V.data.priors || []).forEach((p) => priors.append(el("div", { class: "rr-prior" },
      `${p.date} ${p.description} (${p.accession}, ${p.status})`)));
    if (!(V.data.priors || []).length) priors.append(el("div", {}, "No prior studies of this patient."));
    if (V.data.series.length) await openSeries(V.data.series[0].uid);
    else status("This study has no images yet.");
  }

  function wire(r) {
    if (r.dataset.wired === "1") return;
    r.dataset.wired = "1";
    const stage = $("#rr-stage", r);
    $("#rr-slice", r).addEventListener("input", (e) => setIndex(Number(e.target.value)));
    r.querySelectorAll(".rr-preset").forEach((b) => b.addEventListener("click", () => preset(b.dataset.preset)));
    $("#rr-apply-wl", r).addEventListener("click", () =>
      setWindow(Number($("#rr-wc", r).value), Number($("#rr-ww", r).value)));
    $("#rr-invert", r).addEventListener("click", () => { V.invert = !V.invert; show(); });
    $("#rr-reset", r).addEventListener("click", () => { V.zoom = 1; V.panX = 0; V.panY = 0; applyTransform(); });
    $("#rr-zoom-in", r).addEventListener("click", () => { V.zoom = Math.min(8, V.zoom * 1.25); applyTransform(); });
    $("#rr-zoom-out", r).addEventListener("click", () => { V.zoom = Math.max(0.25, V.zoom / 1.25); applyTransform(); });
    $("#rr-ai-toggle", r).addEventListener("change", (e) => { V.showOverlay = e.target.checked; showOverlay(); });
    $("#rr-ai-opacity", r).addEventListener("input", (e) => { V.opacity = Number(e.target.value); showOverlay(); });
    stage.addEventListener("wheel", (e) => {
      e.preventDefault();
      if (e.ctrlKey) { V.zoom = Math.max(0.25, Math.min(8, V.zoom * (e.deltaY < 0 ? 1.1 : 1 / 1.1))); applyTransform(); }
      else setIndex(V.index + (e.deltaY > 0 ? 1 : -1));
    }, { passive: false });
    let drag = null;
    stage.addEventListener("contextmenu", (e) => e.preventDefault());
    stage.addEventListener("mousedown", (e) => { drag = { x: e.clientX, y: e.clientY, b: e.button, c: V.c, w: V.w, px: V.panX, py: V.panY }; });
    window.addEventListener("mouseup", () => { if (drag && drag.b === 2) show(); drag = null; });
    window.addEventListener("mousemove", (e) => {
      if (!drag) return;
      const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
      if (drag.b === 2) { V.w = Math.max(1, drag.w + dx * 2); V.c = drag.c + dy * 2; status(); }
      else { V.panX = drag.px + dx; V.panY = drag.py + dy; applyTransform(); }
    });
  }

  function typing(e) {
    const t = e.target;
    return t && (t.tagName === "TEXTAREA" || (t.tagName === "INPUT" && !["range", "checkbox", "button"].includes(t.type)) || t.isContentEditable);
  }

  document.addEventListener("keydown", (e) => {
    const r = root();
    if (!r || !V.info || typing(e) || r.offsetParent === null) return;
    const steps = { ArrowDown: 1, ArrowUp: -1, PageDown: 10, PageUp: -10 };
    if (e.key in steps) { e.preventDefault(); setIndex(V.index + steps[e.key]); }
    else if (e.key === "Home") setIndex(0);
    else if (e.key === "End") setIndex(V.info.slices - 1);
    else if (/^[1-8]$/.test(e.key)) preset(PRESET_KEYS[Number(e.key) - 1]);
    else if (e.key === "i") { V.invert = !V.invert; show(); }
    else if (e.key === "+" || e.key === "=") { V.zoom = Math.min(8, V.zoom * 1.25); applyTransform(); }
    else if (e.key === "-") { V.zoom = Math.max(0.25, V.zoom / 1.25); applyTransform(); }
    else if (e.key === "0") { V.zoom = 1; V.panX = 0; V.panY = 0; applyTransform(); }
    else if (e.key === "h") { V.showOverlay = !V.showOverlay; const t = $("#rr-ai-toggle", r); if (t) t.checked = V.showOverlay; showOverlay(); }
  });

  // Gradio re-renders the HTML block when another study is opened: watch for it.
  function check() {
    const r = root();
    if (!r) return;
    wire(r);
    const uid = r.dataset.study;
    if (uid && uid !== r.dataset.opened) { r.dataset.opened = uid; openStudy(uid); }
  }
  new MutationObserver(check).observe(document.documentElement, { childList: true, subtree: true, attributes: true, attributeFilter: ["data-study"] });
  document.addEventListener("DOMContentLoaded", check);
})();

// A short two-tone alert when a new critical study arrives (called by the page).
window.rrBeep = function () {
  try {
    const ctx = new (window.AudioContext || window.webkitAudioContext)();
    [880, 660].forEach((f, i) => {
      const o = ctx.createOscillator(), g = ctx.createGain();
      o.frequency.value = f; o.connect(g); g.connect(ctx.destination);
      g.gain.setValueAtTime(0.15, ctx.currentTime + i * 0.2);
      o.start(ctx.currentTime + i * 0.2); o.stop(ctx.currentTime + i * 0.2 + 0.18);
    });
    window.rrBeeps = (window.rrBeeps || 0) + 1;
  } catch (e) { /* no audio device: the toast is still shown */ }
};

// Dictation microphone: 16 kHz mono PCM posted in order to /api/dictation/<study>/audio.
// The record button (#rr-record) and F4 start and stop it, like a PowerMic's record button.
(function () {
  "use strict";
  const D = (window.rrDictation = { recording: false, sent: 0, queue: [], sending: false, study: null });

  function button() { return document.getElementById("rr-record"); }
  function studyUid() { const v = document.getElementById("rr-viewer"); return v ? v.dataset.study : null; }
  function show(text) {
    const b = button();
    if (b) { b.textContent = text; b.classList.toggle("rr-recording", D.recording); b.dataset.recording = D.recording ? "1" : "0"; }
  }

  async function pump() {
    if (D.sending) return;
    D.sending = true;
    try {
      while (D.queue.length) {
        let { uid, pcm, rate } = D.queue.shift();
        // Everything queued while the last request was out goes in one request: a slow answer
        // never builds a backlog of audio (the end of speech must reach the server at once).
        if (pcm) {
          const more = [new Int16Array(pcm)];
          while (D.queue.length && D.queue[0].pcm && D.queue[0].uid === uid && D.queue[0].rate === rate) {
            more.push(new Int16Array(D.queue.shift().pcm));
          }
          if (more.length > 1) {
            const all = new Int16Array(more.reduce((n, a) => n + a.length, 0)); let o = 0;
            more.forEach((a) => { all.set(a, o); o += a.length; });
            pcm = all.buffer;
          }
        }
        const path = pcm ? `audio?rate=${rate}` : "stop";
        const resp = await fetch(`/api/dictation/${encodeURIComponent(uid)}/${path}`,
          { method: "POST", body: pcm || "", headers: { "Content-Type": "application/octet-stream" } });
        if (!resp.ok) {
          const answer = await resp.text();
          console.warn("dictation:", resp.status, answer);
          if (resp.status === 409 && D.recording) {   // e.g. a signed report: say why, stop recording
            stop();
            let why = answer;
            try { why = JSON.parse(answer).detail || answer; } catch (e) { /* plain text */ }
            const hint = document.querySelector("#rr-mic .rr-hint");
            if (hint) hint.textContent = why;
          }
        }
        if (pcm) D.sent += pcm.byteLength / 2 / rate;
      }
    } finally { D.sending = false; }
  }

  async function start() {
    const uid = studyUid();
    if (!uid) { show("Open a study first"); return; }
    D.study = uid;
    D.stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false } });
    D.ctx = new AudioContext();
    const source = D.ctx.createMediaStreamSource(D.stream);
    let pending = [], samples = 0;
    const rate = D.ctx.sampleRate;
    D.firstSoundAt = null;
    const take = (input) => {                    // Float32 samples from the capture node
      if (!D.recording) return;
      if (D.firstSoundAt === null) {             // when sound first came (level check, benchmark)
        for (let i = 0; i < input.length; i++) {
          if (Math.abs(input[i]) > 0.02) { D.firstSoundAt = performance.now() - (input.length - i) / rate * 1000; break; }
        }
      }
      const pcm = new Int16Array(input.length);
      for (let i = 0; i < input.length; i++) pcm[i] = Math.max(-32768, Math.min(32767, Math.round(input[i] * 32767)));
      pending.push(pcm); samples += pcm.length;
      if (samples >= rate / 10) {                 // a tenth of a second per request: the end of speech is heard soon
        const all = new Int16Array(samples); let o = 0;
        pending.forEach((p) => { all.set(p, o); o += p.length; });
        D.queue.push({ uid, pcm: all.buffer, rate }); pending = []; samples = 0;
        pump();
      }
    };
    const silent = D.ctx.createGain();
    silent.gain.value = 0;                         // the graph must reach the output to run; no sound
    if (D.ctx.audioWorklet) {                      // the audio thread: no samples lost when the page is busy
      const code = "class RRCapture extends AudioWorkletProcessor { process(inputs) { " +
        "const ch = inputs[0] && inputs[0][0]; if (ch) this.port.postMessage(ch.slice(0)); return true; } } " +
        "registerProcessor('rr-capture', RRCapture);";
      await D.ctx.audioWorklet.addModule(URL.createObjectURL(new Blob([code], { type: "application/javascript" })));
      D.node = new AudioWorkletNode(D.ctx, "rr-capture");
      D.node.port.onmessage = (e) => take(e.data);
    } else {                                       // older browsers
      D.node = D.ctx.createScriptProcessor(4096, 1, 1);
      D.node.onaudioprocess = (e) => take(e.inputBuffer.getChannelData(0));
    }
    source.connect(D.node); D.node.connect(silent); silent.connect(D.ctx.destination);
    D.recording = true;
    show("■ Stop (F4)");
  }

  function stop() {
    D.recording = false;
    if (D.node) D.node.disconnect();
    if (D.stream) D.stream.getTracks().forEach((t) => t.stop());
    if (D.ctx) D.ctx.close();
    if (D.study) { D.queue.push({ uid: D.study, pcm: null }); pump(); }
    show("● Record (F4)");
  }

  D.toggle = function () { if (D.recording) stop(); else start().catch((e) => { D.recording = false; show(`Microphone unavailable: ${e.message}`); }); };
  document.addEventListener("click", (e) => { if (e.target && e.target.id === "rr-record") D.toggle(); });
  document.addEventListener("keydown", (e) => { if (e.key === "F4") { e.preventDefault(); D.toggle(); } });
})();
