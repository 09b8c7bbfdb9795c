// The worklist's own script (the Content-Security-Policy allows no other): the large view with window/level,
// zoom, pan and the heatmap's opacity; verdicts by keyboard, saved without a reload. Every form works without it.
(() => {
  "use strict";
  const rows = [...document.querySelectorAll("tr.film-row[data-id]")];
  const viewer = document.getElementById("viewer");
  const canvas = document.getElementById("viewer-canvas");
  const ctx = canvas.getContext("2d");
  const film = document.createElement("canvas"); // the display picture after window/level
  const view = { raw: null, heat: null, box: null, width: 256, level: 128, zoom: 1, panX: 0, panY: 0 };
  const timings = []; // seconds from a film made current to its verdict saved (the page's own timing)
  window.xrayTimings = timings;
  let current = -1;
  let shownAt = performance.now();

  const $ = (id) => document.getElementById(id);
  const single = viewer.dataset.single === "1";

  // --- the large view ------------------------------------------------------------------------
  function applyWindow() {
    if (!view.raw) return;
    const low = view.level - view.width / 2;
    const lut = new Uint8ClampedArray(256);
    for (let v = 0; v < 256; v++) lut[v] = ((v - low) * 255) / view.width;
    const out = new ImageData(view.raw.width, view.raw.height);
    const src = view.raw.data, dst = out.data;
    for (let i = 0; i < src.length; i += 4) {
      const v = lut[src[i]];
      dst[i] = v; dst[i + 1] = v; dst[i + 2] = v; dst[i + 3] = 255;
    }
    film.getContext("2d").putImageData(out, 0, 0);
    $("viewer-wl").textContent = `W ${Math.round(view.width)} L ${Math.round(view.level)}`;
  }

  function draw() {
    const side = canvas.width;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, side, canvas.height);
    if (!view.raw) return;
    ctx.setTransform(view.zoom, 0, 0, view.zoom, view.panX, view.panY);
    // The film in the square the model saw (padded, centred), so the heatmap lies where the model looked.
    const k = side / Math.max(film.width, film.height);
    const w = film.width * k, h = film.height * k;
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(film, (side - w) / 2, (side - h) / 2, w, h);
    if ($("viewer-heat").checked && view.heat && view.heat.complete && view.heat.naturalWidth) {
      ctx.globalAlpha = $("viewer-opacity").value / 100;
      ctx.drawImage(view.heat, 0, 0, side, side);
      ctx.globalAlpha = 1;
      if (view.box) {
        ctx.strokeStyle = "#ffd700";
        ctx.lineWidth = 2 / view.zoom;
        const [x, y, bw, bh] = view.box;
        ctx.strokeRect(x * side, y * side, bw * side, bh * side);
      }
    }
  }

  function reset() {
    Object.assign(view, { width: 256, level: 128, zoom: 1, panX: 0, panY: 0 });
    applyWindow();
    draw();
  }

  function load(data) {
    view.raw = null;
    view.box = data.box ? data.box.split(",").map(Number) : null;
    $("viewer-title").textContent = data.title || "";
    $("viewer-finding").textContent = data.finding ? `(${data.finding})` : "(none called)";
    const note = $("viewer-note");
    note.textContent = data.note || "";
    note.hidden = !data.note;
    const picture = new Image();
    picture.onload = () => {
      film.width = picture.naturalWidth;
      film.height = picture.naturalHeight;
      const c = film.getContext("2d");
      c.drawImage(picture, 0, 0);
      view.raw = c.getImageData(0, 0, film.width, film.height);
      viewer.dataset.loaded = data.id; // for the page's tests: this film's picture is on the canvas
      reset();
    };
    picture.onerror = () => {
      if (picture.src.indexOf(data.thumb) < 0) picture.src = data.thumb; // no display picture: the thumbnail
    };
    picture.src = data.note ? data.thumb : data.display;
    view.heat = null;
    if (data.overlay) {
      view.heat = new Image();
      view.heat.onload = draw;
      view.heat.src = data.overlay;
    }
  }

  function isOpen() {
    return !viewer.hidden;
  }

  function open() {
    if (single || current < 0) return;
    viewer.hidden = false;
    document.body.classList.add("reading");
    load(rows[current].dataset);
  }

  function close() {
    if (single) return;
    viewer.hidden = true;
    document.body.classList.remove("reading");
    if (current >= 0) rows[current].scrollIntoView({ block: "nearest" });
  }

  const scale = () => canvas.width / (canvas.clientWidth || canvas.width); // canvas pixels per CSS pixel
  let drag = null;
  canvas.addEventListener("mousedown", (e) => {
    drag = { x: e.clientX, y: e.clientY, pan: e.shiftKey, ...view };
    e.preventDefault();
  });
  window.addEventListener("mouseup", () => { drag = null; });
  window.addEventListener("mousemove", (e) => {
    if (!drag) return;
    const dx = (e.clientX - drag.x) * scale(), dy = (e.clientY - drag.y) * scale();
    if (drag.pan) {
      view.panX = drag.panX + dx;
      view.panY = drag.panY + dy;
    } else {
      view.width = Math.max(2, Math.min(512, drag.width + dx));
      view.level = Math.max(0, Math.min(255, drag.level + dy));
      applyWindow();
    }
    draw();
  });
  canvas.addEventListener("wheel", (e) => {
    e.preventDefault();
    zoomAt(e.deltaY < 0 ? 1.25 : 0.8, e.offsetX * scale(), e.offsetY * scale());
  }, { passive: false });

  function zoomAt(factor, x, y) {
    const zoom = Math.max(1, Math.min(8, view.zoom * factor));
    view.panX = x - ((x - view.panX) * zoom) / view.zoom;
    view.panY = y - ((y - view.panY) * zoom) / view.zoom;
    view.zoom = zoom;
    if (zoom === 1) { view.panX = 0; view.panY = 0; }
    draw();
  }

  for (const button of viewer.querySelectorAll("[data-preset]")) {
    button.addEventListener("click", () => preset(button.dataset.preset));
  }
  function preset(text) {
    [view.width, view.level] = text.split(",").map(Number);
    applyWindow();
    draw();
  }
  $("viewer-heat").addEventListener("change", draw);
  $("viewer-opacity").addEventListener("input", draw);
  $("viewer-reset").addEventListener("click", reset);
  if ($("viewer-close")) $("viewer-close").addEventListener("click", close);

  // --- the list and its verdicts -----------------------------------------------------------------
  function select(i) {
    if (!rows.length) return;
    i = Math.max(0, Math.min(rows.length - 1, i));
    if (current >= 0) rows[current].classList.remove("current");
    current = i;
    rows[i].classList.add("current");
    if (!isOpen()) rows[i].scrollIntoView({ block: "nearest" });
    shownAt = performance.now();
    if (isOpen()) load(rows[i].dataset);
  }

  function newFormId() {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
  }

  function calls(form) {
    return [...new Set([...form.querySelectorAll("input[type=radio]")].map((r) => r.dataset.finding))];
  }

  async function save(row, extra) {
    const form = row.querySelector("form.verdict");
    const data = new FormData(form);
    for (const [k, v] of Object.entries(extra || {})) data.set(k, v);
    const error = row.querySelector(".save-error");
    const started = shownAt;
    let answer, body;
    try {
      answer = await fetch(form.action, { method: "POST", body: data, headers: { Accept: "application/json" } });
      body = await answer.json();
    } catch (e) {
      body = { saved: false, message: "Your verdict was NOT saved: the app did not answer. Try again." };
    }
    if (!body.saved) {
      error.textContent = body.message;
      error.hidden = false;
      return false;
    }
    error.hidden = true;
    form.querySelector("input[name=form_id]").value = newFormId(); // the next change is a new submission
    for (const [finding, value] of Object.entries(body.findings)) {
      const radio = form.querySelector(`input[type=radio][data-finding="${CSS.escape(finding)}"][value="${value}"]`);
      if (radio) radio.checked = true;
    }
    form.querySelector("input[name=no_finding]").checked = body.no_finding;
    let mine = form.querySelector(".mine");
    if (!mine) {
      mine = document.createElement("div");
      mine.className = "mine";
      form.appendChild(mine);
    }
    const said = Object.keys(body.findings).sort().map((f) => `${f} ${body.findings[f]}`);
    if (body.no_finding) said.push("no finding");
    mine.textContent = "saved: " + (said.join("; ") || "nothing marked");
    row.classList.add("answered");
    timings.push((performance.now() - started) / 1000);
    const mean = timings.reduce((a, b) => a + b, 0) / timings.length;
    const pace = $("pace");
    if (pace) pace.textContent = `${timings.length} saved here, ${mean.toFixed(1)} s per verdict.`;
    return true;
  }

  async function answer(kind) {
    const row = single ? document.querySelector("tr.film-row") : rows[current];
    if (!row) return;
    const form = row.querySelector("form.verdict");
    const extra = {};
    if (kind === "agree") extra.agree_all = "1";
    if (kind === "reject" || kind === "none") for (const f of calls(form)) extra[`v:${f}`] = "reject";
    if (kind === "none") extra.no_finding = "1";
    if (await save(row, extra) && !single) select(current + 1);
  }

  function toggle(n) {
    const row = single ? document.querySelector("tr.film-row") : rows[current];
    if (!row) return;
    const form = row.querySelector("form.verdict");
    const finding = calls(form)[n];
    if (finding === undefined) return;
    const confirm = form.querySelector(`input[data-finding="${CSS.escape(finding)}"][value=confirm]`);
    const reject = form.querySelector(`input[data-finding="${CSS.escape(finding)}"][value=reject]`);
    (confirm.checked ? reject : confirm).checked = true;
  }

  for (const form of document.querySelectorAll("form.verdict")) {
    form.addEventListener("submit", (e) => { // the Save and Agree buttons, without a reload
      e.preventDefault();
      const row = form.closest("tr.film-row");
      const i = rows.indexOf(row);
      if (i >= 0 && i !== current) select(i);
      const agree = e.submitter && e.submitter.name === "agree_all";
      save(row, agree ? { agree_all: "1" } : {});
    });
  }
  for (const link of document.querySelectorAll("a.open")) {
    link.addEventListener("click", (e) => {
      e.preventDefault();
      select(rows.indexOf(link.closest("tr.film-row")));
      open();
    });
  }
  rows.forEach((row, i) => row.addEventListener("click", (e) => {
    if (e.target.closest("a, form")) return;
    select(i);
  }));

  document.addEventListener("keydown", (e) => {
    const typing = e.target.closest && e.target.closest("textarea, button, input[type=text], input[type=password]");
    if (typing || e.ctrlKey || e.metaKey || e.altKey) {
      return;
    }
    const keys = {
      j: () => select(current + 1), ArrowDown: () => select(current + 1),
      k: () => select(current - 1), ArrowUp: () => select(current - 1),
      o: open, Enter: open, Escape: close,
      a: () => answer("agree"), x: () => answer("reject"), n: () => answer("none"),
      s: () => answer("save"),
      h: () => { $("viewer-heat").checked = !$("viewer-heat").checked; draw(); },
      r: reset, f: () => preset("256,128"), l: () => preset("150,85"), b: () => preset("150,175"),
      "+": () => zoomAt(1.25, canvas.width / 2, canvas.height / 2),
      "-": () => zoomAt(0.8, canvas.width / 2, canvas.height / 2),
    };
    let act = keys[e.key];
    if (!act && /^[1-9]$/.test(e.key)) act = () => toggle(Number(e.key) - 1);
    if (!act) return;
    e.preventDefault();
    act();
  });

  if (single) {
    load(viewer.dataset);
  } else if (rows.length) {
    select(0);
  }
})();
