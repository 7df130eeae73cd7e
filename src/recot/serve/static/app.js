// recot's page: upload or pick a video, ask about it, watch the answer stream in, and see where it came from.
// Plain browser JavaScript against the same HTTP API as every other client (no build step).
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_STORAGE = "recot-api-key";
const state = { model: null, videos: new Map(), current: null, polling: null, selection: null, asking: false };

// ----- HTTP ---------------------------------------------------------------------------------------------
function headers(extra = {}) {
  const key = localStorage.getItem(KEY_STORAGE);
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

async function errorText(response) {
  try {
    const body = await response.json();
    return body.error ? body.error.message : `HTTP ${response.status}`;
  } catch {
    return `HTTP ${response.status}`;
  }
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers(options.headers || {}) });
  if (response.status === 401) {
    askForKey();
    throw new Error("this server needs an API key: enter it at the top right");
  }
  if (!response.ok) throw new Error(await errorText(response));
  return response;
}

function askForKey() {
  $("key-form").hidden = false;
  $("key-input").focus();
}

function toast(message) {
  const box = $("toast");
  box.textContent = message;
  box.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { box.hidden = true; }, 6000);
}

// ----- videos ---------------------------------------------------------------------------------------------
function formatTime(seconds) {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return h ? `${h}:${String(m).padStart(2, "0")}:${String(r).padStart(2, "0")}` : `${m}:${String(r).padStart(2, "0")}`;
}

function formatBytes(n) {
  const units = ["B", "KB", "MB", "GB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

async function loadModel() {
  try {
    const models = await (await api("/v1/models")).json();
    state.model = models.data[0].id;
    $("model-name").textContent = state.model;
  } catch (error) {
    toast(error.message);
  }
}

async function loadVideos(selectId) {
  let list;
  try {
    list = await (await api("/v1/videos")).json();
  } catch (error) {
    toast(error.message);
    return;
  }
  state.videos = new Map(list.data.map((v) => [v.id, v]));
  const select = $("video-select");
  select.replaceChildren(new Option("Pick an uploaded video…", ""));
  for (const video of list.data) {
    const label = `${video.filename} · ${video.duration != null ? formatTime(video.duration) : "?"} · ${video.status}`;
    select.add(new Option(label, video.id));
  }
  const wanted = selectId || (state.current && state.videos.has(state.current) ? state.current : "");
  select.value = wanted;
  await choose(wanted);
}

async function choose(videoId) {
  state.current = videoId || null;
  state.selection = null;
  clearInterval(state.polling);
  $("delete-button").disabled = !videoId;
  $("timeline").hidden = true;
  $("heatmap-hint").hidden = false;
  if (!videoId) {
    $("video-info").textContent = "Upload a video or pick one to ask about it.";
    updateAskButton();
    return;
  }
  showVideo(state.videos.get(videoId));
  if (!["ready", "failed"].includes(state.videos.get(videoId).status)) {
    state.polling = setInterval(() => poll(videoId), 500);
  }
}

async function poll(videoId) {
  try {
    const video = await (await api(`/v1/videos/${videoId}`)).json();
    state.videos.set(videoId, video);
    if (state.current === videoId) showVideo(video);
    if (["ready", "failed"].includes(video.status)) {
      clearInterval(state.polling);
      const option = [...$("video-select").options].find((o) => o.value === videoId);
      if (option) option.text = option.text.replace(/ · [a-z]+$/, ` · ${video.status}`);
    }
  } catch (error) {
    clearInterval(state.polling);
    toast(error.message);
  }
}

function showVideo(video) {
  const bits = [`${video.width}×${video.height}`, formatTime(video.duration || 0), formatBytes(video.bytes)];
  if (video.frames) bits.push(`${video.frames} frames`);
  if (video.groups) bits.push(`${video.groups} groups`);
  $("video-info").textContent = bits.join(" · ");
  if (video.status === "failed") {
    $("video-info").textContent += ` · failed: ${video.error ? video.error.message : "unknown error"}`;
  }
  const progress = $("upload");
  if (video.status === "queued" || video.status === "encoding") {
    progress.hidden = false;
    $("upload-bar").classList.add("encoding");
    $("upload-bar").style.width = `${Math.round(video.progress * 100)}%`;
    $("upload-label").textContent = video.status === "queued" ? "Waiting to encode…" : `Encoding ${Math.round(video.progress * 100)}%`;
  } else if ($("upload-bar").classList.contains("encoding")) {
    progress.hidden = true;
  }
  if (video.thumbnails && $("thumbs").dataset.video !== video.id) loadThumbnails(video);
  if (video.thumbnails || video.status === "ready") {
    $("timeline").hidden = false;
    $("axis-start").textContent = formatTime(0);
    $("axis-middle").textContent = formatTime((video.duration || 0) / 2);
    $("axis-end").textContent = formatTime(video.duration || 0);
    drawStrip();
    drawHeatmap();
  }
  updateAskButton();
}

async function loadThumbnails(video) {
  const img = $("thumbs");
  img.dataset.video = video.id;
  try {
    const blob = await (await api(video.thumbnails.url)).blob();
    if (img.src.startsWith("blob:")) URL.revokeObjectURL(img.src);
    img.onload = drawStrip;
    img.src = URL.createObjectURL(blob);
  } catch (error) {
    toast(error.message);
  }
}

// A canvas sized to its CSS box at the screen's pixel density, cleared; drawing is in CSS pixels.
function clearedCanvas(canvas) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth, height = canvas.clientHeight;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  return { ctx, width, height };
}

// The thumbnails side by side along the timeline, each cropped to its share of the width (never squeezed).
function drawStrip() {
  const canvas = $("strip"), img = $("thumbs");
  const video = state.videos.get(state.current);
  const { ctx, width, height } = clearedCanvas(canvas);
  if (!video || !video.thumbnails || img.dataset.video !== video.id || !img.complete || !img.naturalWidth) return;
  const { count, width: tileWidth, height: tileHeight } = video.thumbnails;
  const cell = width / count;
  const cropWidth = Math.min(tileWidth, (cell / height) * tileHeight);
  const cropHeight = Math.min(tileHeight, (height / cell) * tileWidth);
  for (let i = 0; i < count; i++) {
    const sx = i * tileWidth + (tileWidth - cropWidth) / 2, sy = (tileHeight - cropHeight) / 2;
    ctx.drawImage(img, sx, sy, cropWidth, cropHeight, i * cell, 0, cell + 0.5, height);
  }
  ctx.fillStyle = "rgba(15, 19, 32, 0.55)";
  for (let i = 1; i < count; i++) ctx.fillRect(Math.round(i * cell), 0, 1, height);
}

function upload(file) {
  const form = new FormData();
  form.append("file", file, file.name);
  const request = new XMLHttpRequest();
  request.open("POST", "/v1/videos");
  for (const [name, value] of Object.entries(headers())) request.setRequestHeader(name, value);
  $("upload").hidden = false;
  $("upload-bar").classList.remove("encoding");
  $("upload-bar").style.width = "0%";
  $("upload-label").textContent = "Uploading…";
  request.upload.onprogress = (event) => {
    if (!event.lengthComputable) return;
    const share = event.loaded / event.total;
    $("upload-bar").style.width = `${Math.round(share * 100)}%`;
    $("upload-label").textContent = `Uploading ${Math.round(share * 100)}% of ${formatBytes(event.total)}`;
  };
  request.onerror = () => { $("upload").hidden = true; toast("the upload failed: the server could not be reached"); };
  request.onload = async () => {
    let body = null;
    try { body = JSON.parse(request.responseText); } catch { /* not JSON */ }
    if (request.status === 401) { $("upload").hidden = true; askForKey(); return; }
    if (request.status !== 200) {
      $("upload").hidden = true;
      toast(body && body.error ? body.error.message : `the upload failed (HTTP ${request.status})`);
      return;
    }
    $("upload-bar").classList.add("encoding");
    $("upload-label").textContent = "Uploaded; encoding…";
    await loadVideos(body.id);
  };
  request.send(form);
}

async function deleteCurrent() {
  const video = state.videos.get(state.current);
  if (!video || !confirm(`Delete ${video.filename}?`)) return;
  try {
    await api(`/v1/videos/${video.id}`, { method: "DELETE" });
    state.current = null;
    await loadVideos("");
  } catch (error) {
    toast(error.message);
  }
}

// ----- the heatmap ----------------------------------------------------------------------------------------
const PALETTE = [[32, 18, 77], [90, 24, 154], [201, 24, 74], [247, 127, 0], [252, 191, 73]];

function heatColor(score) {
  const x = Math.min(1, Math.max(0, score)) * (PALETTE.length - 1);
  const i = Math.min(PALETTE.length - 2, Math.floor(x));
  const f = x - i;
  const [a, b] = [PALETTE[i], PALETTE[i + 1]];
  return `rgb(${a.map((v, k) => Math.round(v + (b[k] - v) * f)).join(",")})`;
}

function drawHeatmap() {
  const canvas = $("heatmap");
  const { ctx, width, height } = clearedCanvas(canvas);
  const selection = state.selection;
  const video = state.videos.get(state.current);
  if (!selection || !video) {
    canvas.dataset.groups = "0";
    canvas.dataset.keptGroups = "0";
    return;
  }
  const duration = Math.max(video.duration || 0, selection.timestamps[selection.groups - 1] + 1e-3);
  const heatHeight = height - 10;
  for (let g = 0; g < selection.groups; g++) {
    const x0 = (selection.timestamps[g] / duration) * width;
    const x1 = g + 1 < selection.groups ? (selection.timestamps[g + 1] / duration) * width : width;
    const w = Math.max(1, x1 - x0);
    ctx.fillStyle = heatColor(selection.scores[g]);
    ctx.fillRect(x0, 0, w + 0.5, heatHeight);
    const kept = selection.kept[g] / selection.tokens_per_group;
    if (kept > 0) {
      ctx.fillStyle = `rgba(18, 161, 80, ${0.25 + 0.75 * kept})`;
      ctx.fillRect(x0 + (w > 3 ? 0.5 : 0), heatHeight + 3, Math.max(1, w - (w > 3 ? 1 : 0)), 6);
    }
  }
  canvas.dataset.groups = String(selection.groups);
  canvas.dataset.keptGroups = String(selection.kept.filter((k) => k > 0).length);
}

function describeGroupAt(event) {
  const selection = state.selection;
  const video = state.videos.get(state.current);
  if (!selection || !video) return "";
  const duration = Math.max(video.duration || 0, selection.timestamps[selection.groups - 1] + 1e-3);
  const t = (event.offsetX / event.target.clientWidth) * duration;
  let g = 0;
  while (g + 1 < selection.groups && selection.timestamps[g + 1] <= t) g++;
  return `${formatTime(selection.timestamps[g])}: score ${selection.scores[g].toFixed(2)}, ` +
    `${selection.kept[g]} of ${selection.tokens_per_group} tokens kept`;
}

// ----- asking ------------------------------------------------------------------------------------------------
function updateAskButton() {
  const video = state.videos.get(state.current);
  $("ask-button").disabled = state.asking || !video || video.status === "failed" || !$("question").value.trim();
}

function numberOption(id) {
  const value = $(id).value.trim();
  return value === "" ? undefined : Number(value);
}

async function ask(event) {
  event.preventDefault();
  const question = $("question").value.trim();
  const video = state.videos.get(state.current);
  if (!question || !video || state.asking) return;
  state.asking = true;
  updateAskButton();
  const answer = $("answer");
  answer.textContent = "";
  answer.dataset.state = "streaming";
  $("answer-stats").textContent = video.status === "ready" ? "Thinking…" : "Waiting for the video to be encoded…";
  const body = {
    model: state.model, stream: true, stream_options: { include_usage: true },
    messages: [{ role: "user", content: [
      { type: "video_url", video_url: { url: video.url } }, { type: "text", text: question },
    ] }],
    max_tokens: numberOption("opt-max-tokens"), temperature: numberOption("opt-temperature"),
    keep_ratio: numberOption("opt-keep-ratio"), max_visual_tokens: numberOption("opt-max-visual"),
  };
  const started = performance.now();
  let usage = null, info = null, finish = null, text = "";
  try {
    const response = await api("/v1/chat/completions", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    for await (const data of serverSentEvents(response)) {
      if (data === "[DONE]") break;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message);
      if (chunk.recot && chunk.recot.selection) {
        state.selection = chunk.recot.selection;
        $("heatmap-hint").hidden = true;
        drawHeatmap();
      }
      if (chunk.recot && chunk.recot.frames) info = chunk.recot;
      if (chunk.usage) usage = chunk.usage;
      const choice = chunk.choices && chunk.choices[0];
      if (choice && choice.delta && choice.delta.content) {
        text += choice.delta.content;
        answer.textContent = text;
      }
      if (choice && choice.finish_reason) finish = choice.finish_reason;
    }
    if (!text) {
      const note = document.createElement("span");
      note.className = "note";
      note.textContent = `(no visible text: the model generated ${usage ? usage.completion_tokens : "only"} invisible tokens)`;
      answer.replaceChildren(note);
    }
    const seconds = ((performance.now() - started) / 1000).toFixed(2);
    const parts = [`${seconds} s`];
    if (usage) parts.push(`${usage.visual_tokens_kept} of ${usage.visual_tokens} visual tokens kept`, `${usage.completion_tokens} tokens`);
    if (info) parts.push(`${info.frames} frames`, info.cache_hit ? "encoding cached" : "encoded now");
    if (finish === "length") parts.push("stopped at max tokens");
    $("answer-stats").textContent = parts.join(" · ");
    answer.dataset.state = "done";
  } catch (error) {
    answer.dataset.state = "error";
    $("answer-stats").textContent = "";
    toast(error.message);
  } finally {
    state.asking = false;
    updateAskButton();
  }
}

async function* serverSentEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = event.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
      if (data) yield data;
    }
  }
}

// ----- wiring ----------------------------------------------------------------------------------------------------
$("file-input").addEventListener("change", (event) => {
  const file = event.target.files[0];
  if (file) upload(file);
  event.target.value = "";
});
$("video-select").addEventListener("change", (event) => choose(event.target.value));
$("delete-button").addEventListener("click", deleteCurrent);
$("ask-form").addEventListener("submit", ask);
$("question").addEventListener("input", updateAskButton);
$("question").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) $("ask-form").requestSubmit();
});
$("heatmap").addEventListener("mousemove", (event) => { event.target.title = describeGroupAt(event); });
$("key-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  localStorage.setItem(KEY_STORAGE, $("key-input").value.trim());
  $("key-form").hidden = true;
  $("toast").hidden = true;
  await loadModel();
  await loadVideos();
});
window.addEventListener("resize", () => { drawStrip(); drawHeatmap(); });

loadModel().then(() => loadVideos());
