// Progressive enhancement for the admin pages; everything works without it.
"use strict";

// An issue being sent: its progress follows the counters without reloading the page.
function followProgress(section) {
  const url = section.dataset.progressUrl;
  const started = section.dataset.status;
  if (started !== "sending" && started !== "scheduled") return;
  const tick = async () => {
    try {
      const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (!response.ok) return;
      const data = await response.json();
      for (const bar of section.querySelectorAll("progress")) bar.value = data.progress;
      for (const field of section.querySelectorAll("[data-field]")) {
        const name = field.dataset.field;
        if (name === "progress") field.textContent = data.progress;
        else if (name === "status") field.textContent = data.status;
        else if (name in data.counts) field.textContent = data.counts[name];
      }
      if (data.status !== started) {
        window.location.reload();  // other buttons apply now (resume, retry)
        return;
      }
    } catch (error) {
      // The next tick tries again.
    }
    window.setTimeout(tick, 1500);
  };
  window.setTimeout(tick, 1500);
}

// The compose form: the preview follows what is typed, rendered by the server as it will be sent.
function livePreview(form) {
  const frame = document.querySelector("iframe[name='preview-frame']");
  const text = document.querySelector("[data-preview='text']");
  const subject = document.querySelector("[data-preview='subject']");
  if (!frame) return;
  let timer = 0;
  const refresh = async () => {
    const fields = new FormData(form);
    const post = document.createElement("form");
    post.method = "post";
    post.action = form.dataset.livePreview;
    post.target = frame.name;
    post.hidden = true;
    for (const name of ["csrf_token", "subject", "markdown"]) {
      const input = document.createElement("input");
      input.type = "hidden";
      input.name = name;
      input.value = fields.get(name) || "";
      post.appendChild(input);
    }
    document.body.appendChild(post);
    post.submit();
    post.remove();
    const response = await fetch(form.dataset.liveText, { method: "POST", body: new URLSearchParams(fields) });
    if (response.ok) {
      const data = await response.json();
      if (text) text.textContent = data.text;
      if (subject) subject.textContent = data.subject;
    }
  };
  form.addEventListener("input", () => {
    window.clearTimeout(timer);
    timer = window.setTimeout(refresh, 600);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  for (const section of document.querySelectorAll("[data-progress-url]")) followProgress(section);
  for (const form of document.querySelectorAll("form[data-live-preview]")) livePreview(form);
});
