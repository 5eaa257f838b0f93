// The resumable mode: one file over tus 1.0 with tus-js-client (served by the app at
// /vendor/tus.min.js). Pause aborts the request in flight; Resume (or a retry after a lost
// connection) asks the server for its offset and sends from there. A file chosen again after
// a reload resumes the upload the browser remembers for it (findPreviousUploads).
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const fileInput = $("tus-file");
  const chunkInput = $("tus-chunk");
  const parallelInput = $("tus-parallel");
  const startButton = $("tus-start");
  const pauseButton = $("tus-pause");
  const resumeButton = $("tus-resume");
  const progress = $("tus-progress");
  const bar = progress.querySelector(".progress-bar");
  const percentText = $("tus-percent");
  const stateText = $("tus-state");
  const result = $("tus-result");

  let upload = null;
  let endpoint = new URL("/uploads/resumable", window.location.href).href;

  function show(state, text) {
    stateText.dataset.state = state;
    stateText.textContent = text;
    // One upload at a time: its file and options stay as they are until it is done or failed.
    const busy = ["uploading", "paused", "retrying", "storing"].includes(state);
    fileInput.disabled = chunkInput.disabled = parallelInput.disabled = busy;
    startButton.disabled = !fileInput.files.length || busy;
    pauseButton.disabled = !["uploading", "retrying"].includes(state);
    resumeButton.disabled = state !== "paused";
  }

  function setProgress(sent, total) {
    const percent = total ? Math.floor((sent / total) * 100) : 0;
    bar.style.width = `${percent}%`;
    progress.setAttribute("aria-valuenow", String(percent));
    progress.dataset.bytes = String(sent); // exact figure for whoever checks that it stopped
    percentText.textContent = `${percent}%`;
  }

  function statusOf(error) {
    const response = error && error.originalResponse;
    return response ? response.getStatus() : 0;
  }

  function explain(error, file) {
    const status = statusOf(error);
    if (status === 422 && file.size === 0) return "This file is empty, so there is nothing to store.";
    let detail = "";
    try {
      const body = JSON.parse(error.originalResponse.getBody()).detail;
      detail = Array.isArray(body) ? body.map((item) => item.msg).join("; ") : String(body || "");
      detail = detail.replace(/^[^:\s]+: /, ""); // drop the "field: " prefix
    } catch (_) {
      // no JSON body: a lost connection, or a HEAD
    }
    if (status === 0) return "The connection was lost and did not come back. Press Start to resume.";
    return `The server refused the upload (HTTP ${status})${detail ? `: ${detail}` : "."}`;
  }

  async function showStored(url) {
    show("storing", "Reading the stored file…");
    const response = await fetch(url, { cache: "no-store" });
    if (!response.ok) throw new Error(`GET ${url} answered ${response.status}`);
    const stored = await response.json(); // the upload's FileData
    result.dataset.uploadUrl = url;
    $("tus-name").textContent = stored.filename;
    const link = $("tus-url");
    link.textContent = stored.url || "(none)";
    if (stored.url) link.href = stored.url;
    $("tus-size").textContent = `${stored.size.toLocaleString()} bytes`;
    $("tus-sha256").textContent = stored.sha256;
    result.hidden = false;
    show("done", "Stored");
  }

  async function start() {
    const file = fileInput.files[0];
    if (!file) return;
    result.hidden = true;
    setProgress(0, file.size);
    const chunkKiB = Number(chunkInput.value) || 1024;
    upload = new tus.Upload(file, {
      endpoint,
      chunkSize: chunkKiB * 1024,
      parallelUploads: parallelInput.checked ? 2 : 1,
      metadata: { filename: file.name, filetype: file.type || "application/octet-stream" },
      // About 45 s in all: longer than the 30 s a crashed server's lease can hold the upload.
      retryDelays: [0, 500, 1000, 2000, 3000, 5000, 8000, 10000, 15000],
      removeFingerprintOnSuccess: true,
      onProgress: (sent, total) => {
        setProgress(sent, total);
        if (stateText.dataset.state !== "paused") show("uploading", "Uploading…");
      },
      onShouldRetry: (error) => {
        // tus-js-client's own rule (no retry on a 4xx but 409 and 423), shown to the user.
        const status = statusOf(error);
        const retry = status === 0 || status >= 500 || status === 409 || status === 423;
        if (retry) show("retrying", "Connection lost: retrying…");
        return retry;
      },
      onSuccess: () => {
        setProgress(file.size, file.size);
        showStored(upload.url).catch((error) => show("failed", String(error.message || error)));
      },
      onError: (error) => show("failed", explain(error, file)),
    });
    show("uploading", "Starting…");
    const previous = await upload.findPreviousUploads();
    if (previous.length) {
      upload.resumeFromPreviousUpload(previous[0]);
      show("uploading", "Resuming the earlier upload of this file…");
    }
    upload.start();
  }

  startButton.addEventListener("click", () => {
    start().catch((error) => show("failed", String(error.message || error)));
  });
  pauseButton.addEventListener("click", () => {
    if (!upload) return;
    show("paused", "Paused");
    upload.abort(); // stops the request in flight; the server keeps what it received
  });
  resumeButton.addEventListener("click", () => {
    if (!upload) return;
    show("uploading", "Resuming…");
    upload.start(); // HEAD for the server's offset, then PATCHes from there
  });
  fileInput.addEventListener("change", () => {
    upload = null;
    result.hidden = true;
    const file = fileInput.files[0];
    setProgress(0, file ? file.size : 0);
    show("idle", file ? "Ready: press Start." : "Choose a file.");
  });

  if (typeof tus === "undefined" || !tus.isSupported) {
    show("unavailable", "tus-js-client is not installed: `make run` installs it with npm.");
    fileInput.disabled = chunkInput.disabled = parallelInput.disabled = startButton.disabled = true;
    return;
  }
  fetch("/api/settings")
    .then((response) => response.json())
    .then((settings) => {
      endpoint = new URL(settings.resumable_endpoint, window.location.href).href;
    });
  show("idle", "Choose a file.");
})();
