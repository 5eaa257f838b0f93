// Upload each chosen or dropped file in its own request, so each gets its own progress bar
// and its own error message. XHR rather than fetch: only XHR reports upload progress.
"use strict";

const state = { field: "document", maxFileSize: null, allowed: [] };

const dropzone = document.getElementById("dropzone");
const input = document.getElementById("file-input");
const list = document.getElementById("files");

function formatSize(bytes) {
  if (bytes < 1024) return `${bytes} bytes`;
  const units = ["KB", "MB", "GB", "TB"];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value >= 10 ? Math.round(value) : value.toFixed(1)} ${units[unit]}`;
}

function extensionOf(name) {
  const dot = name.lastIndexOf(".");
  return dot > 0 ? name.slice(dot).toLowerCase() : "";
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function serverMessage(body) {
  const detail = body && body.detail;
  const first = Array.isArray(detail) ? detail[0] : null;
  const message = first && typeof first.msg === "string" ? first.msg : typeof detail === "string" ? detail : "";
  return message.replace(/^[^:\s]+: /, ""); // drop the "field: " prefix
}

// The server's answer, in words a person can act on.
function explain(status, body, file) {
  const limit = state.maxFileSize;
  if (status === 413 || (status === 0 && limit !== null && file.size > limit)) {
    const max = limit !== null ? `files can be at most ${formatSize(limit)}` : "it is over the size limit";
    return `Too large: this file is ${formatSize(file.size)}, and ${max}.`;
  }
  if (status === 415) {
    const ext = extensionOf(file.name);
    const kind = ext ? `“${ext}” files are` : "Files without an extension are";
    return `${kind} not accepted here. Accepted types: ${state.allowed.join(", ")}.`;
  }
  if (status === 422) {
    if (file.size === 0) return "This file is empty, so there is nothing to store.";
    return `The server refused this file: ${serverMessage(body) || "it broke an upload rule"}.`;
  }
  if (status === 409) return "A file with this name already exists, and it was not replaced.";
  if (status === 400) return "The upload arrived damaged. Please try again.";
  if (status === 0) return "The connection was lost before the upload finished. Please try again.";
  if (status >= 500) return "The file could not be stored because of a problem on the server. Please try again later.";
  return `The upload failed (HTTP ${status}).`;
}

function addRow(file) {
  const row = element("li", "file uploading");
  const head = element("div", "file-head");
  head.append(element("span", "file-name", file.name), element("span", "file-size", formatSize(file.size)));
  const progress = element("div", "progress");
  progress.setAttribute("role", "progressbar");
  progress.setAttribute("aria-label", `Uploading ${file.name}`);
  progress.setAttribute("aria-valuemin", "0");
  progress.setAttribute("aria-valuemax", "100");
  const bar = element("div", "progress-bar");
  progress.append(bar);
  const status = element("div", "file-state", "Waiting…");
  row.append(head, progress, status);
  list.prepend(row);
  document.getElementById("files-heading").hidden = false;
  return {
    progress(percent) {
      bar.style.width = `${percent}%`;
      progress.setAttribute("aria-valuenow", String(percent));
      status.textContent = percent < 100 ? `Uploading… ${percent}%` : "Storing…";
    },
    done(stored) {
      row.className = "file done";
      row.dataset.status = "200";
      status.className = "file-state ok";
      status.textContent = "Stored";
      const details = element("dl", "details");
      details.append(element("dt", "", "Stored as"), element("dd", "stored-name", stored.name));
      details.append(element("dt", "", "Size"), element("dd", "stored-size", `${stored.size.toLocaleString()} bytes`));
      details.append(element("dt", "", "SHA-256"), element("dd", "sha256", stored.sha256));
      const link = element("a", "download", "Download");
      link.href = stored.download_url;
      link.setAttribute("download", stored.name);
      row.append(details, link);
    },
    failed(httpStatus, message) {
      row.className = "file failed";
      row.dataset.status = String(httpStatus); // the HTTP status, 0 for a lost connection
      status.remove();
      row.append(element("p", "error", message));
    },
  };
}

function upload(file) {
  const row = addRow(file);
  const form = new FormData();
  form.append(state.field, file, file.name);
  const xhr = new XMLHttpRequest();
  xhr.open("POST", "/documents");
  xhr.responseType = "json";
  xhr.upload.addEventListener("progress", (event) => {
    if (event.lengthComputable) row.progress(Math.floor((event.loaded / event.total) * 100));
  });
  xhr.addEventListener("load", () => {
    if (xhr.status === 200 && Array.isArray(xhr.response) && xhr.response.length > 0) {
      row.done(xhr.response[0]);
    } else {
      row.failed(xhr.status, explain(xhr.status, xhr.response, file));
    }
  });
  xhr.addEventListener("error", () => row.failed(0, explain(0, null, file)));
  row.progress(0);
  xhr.send(form);
}

function uploadAll(files) {
  for (const file of files) upload(file);
}

input.addEventListener("change", () => {
  uploadAll(Array.from(input.files));
  input.value = ""; // choosing the same file again uploads it again
});

for (const name of ["dragenter", "dragover"]) {
  dropzone.addEventListener(name, (event) => {
    event.preventDefault();
    dropzone.classList.add("dragging");
  });
}
for (const name of ["dragleave", "drop"]) {
  dropzone.addEventListener(name, () => dropzone.classList.remove("dragging"));
}
dropzone.addEventListener("drop", (event) => {
  event.preventDefault();
  uploadAll(Array.from(event.dataTransfer.files));
});
// A file dropped beside the zone must not make the browser navigate away from the page.
window.addEventListener("dragover", (event) => event.preventDefault());
window.addEventListener("drop", (event) => event.preventDefault());

fetch("/api/settings")
  .then((response) => response.json())
  .then((settings) => {
    state.field = settings.field;
    state.maxFileSize = settings.max_file_size;
    state.allowed = settings.allowed_extensions;
    document.getElementById("limits").textContent =
      `Up to ${formatSize(settings.max_file_size)} per file. Accepted: ${settings.allowed_extensions.join(" ")}`;
    const badge = document.getElementById("backend");
    badge.textContent = `stored on: ${settings.backend}`;
    badge.hidden = false;
  });
