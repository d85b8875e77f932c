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

// A segment's expression: the people it matches, counted as it is typed, or where it goes wrong.
function liveCount(field) {
  const answer = field.form.querySelector("[data-segment-answer]");
  let timer = 0;
  const refresh = async () => {
    const fields = new FormData(field.form);
    const body = new URLSearchParams({ csrf_token: fields.get("csrf_token") || "", expression: field.value });
    try {
      const response = await fetch(field.dataset.segmentCount, { method: "POST", body, credentials: "same-origin" });
      const data = await response.json();
      answer.replaceChildren();
      if (response.ok) {
        answer.textContent = `${data.count.toLocaleString("en")}${data.estimated ? " (estimated)" : ""} people match.`;
        field.removeAttribute("aria-invalid");
        return;
      }
      field.setAttribute("aria-invalid", "true");
      const message = document.createElement("span");
      message.className = "error";
      message.textContent = data.error || "This expression cannot be counted.";
      answer.appendChild(message);
      if (Number.isInteger(data.position)) {
        // The line of the mistake with a caret under its column.
        const text = field.value.trim();
        const start = text.lastIndexOf("\n", data.position - 1) + 1;
        const end = text.indexOf("\n", data.position);
        const caret = document.createElement("pre");
        caret.dataset.segmentCaret = "";
        caret.textContent = `${text.slice(start, end < 0 ? undefined : end)}\n${" ".repeat(data.position - start)}^`;
        answer.appendChild(caret);
      }
    } catch (error) {
      // The next change tries again.
    }
  };
  field.addEventListener("input", () => {
    window.clearTimeout(timer);
    timer = window.setTimeout(refresh, 400);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  for (const field of document.querySelectorAll("textarea[data-segment-count]")) liveCount(field);
  for (const section of document.querySelectorAll("[data-progress-url]")) followProgress(section);
  for (const form of document.querySelectorAll("form[data-live-preview]")) livePreview(form);
});
