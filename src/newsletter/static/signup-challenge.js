// The sign-up form's proof of work (NEWSLETTER_SIGNUP_CHALLENGE=pow, the ALTCHA protocol): on submit, fetch
// a challenge, find the number whose SHA-256 of salt + number is the challenge, put the solution in the
// form's `altcha` field and send the form. One click for the person; a fraction of a second for the browser.
"use strict";

(function () {
  const BATCH = 500; // digests awaited together: one await per digest would cost more than the hashing

  function bytesOf(hex) {
    const bytes = new Uint8Array(hex.length / 2);
    for (let i = 0; i < bytes.length; i += 1) bytes[i] = parseInt(hex.substr(i * 2, 2), 16);
    return bytes;
  }

  function same(buffer, expected) {
    const bytes = new Uint8Array(buffer);
    for (let i = 0; i < expected.length; i += 1) if (bytes[i] !== expected[i]) return false;
    return true;
  }

  async function solve(challenge) {
    const encoder = new TextEncoder();
    const expected = bytesOf(challenge.challenge);
    for (let start = 0; start <= challenge.maxnumber; start += BATCH) {
      const numbers = [];
      for (let n = start; n < start + BATCH && n <= challenge.maxnumber; n += 1) numbers.push(n);
      const digests = await Promise.all(
        numbers.map((n) => crypto.subtle.digest("SHA-256", encoder.encode(challenge.salt + n)))
      );
      const found = digests.findIndex((digest) => same(digest, expected));
      if (found >= 0) return numbers[found];
    }
    return null;
  }

  async function solution(url) {
    const response = await fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" });
    if (!response.ok) throw new Error("challenge: HTTP " + response.status);
    const challenge = await response.json();
    const number = await solve(challenge);
    if (number === null) throw new Error("challenge: no solution");
    const { algorithm, salt, signature } = challenge;
    return btoa(JSON.stringify({ algorithm, challenge: challenge.challenge, number, salt, signature }));
  }

  for (const form of document.querySelectorAll("form[data-challenge]")) {
    const field = form.querySelector("input[name=altcha]");
    const button = form.querySelector("button[type=submit]");
    const status = form.querySelector("[data-challenge-status]");
    // Back to this page from the next one (the browser's page cache): the solution sent is spent.
    window.addEventListener("pageshow", (event) => {
      if (!event.persisted) return;
      field.value = "";
      button.disabled = false;
      status.textContent = "";
    });
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (button.disabled) return;
      button.disabled = true;
      status.textContent = "Checking that this is a browser…";
      try {
        field.value = await solution(form.dataset.challenge);
        status.textContent = "Sending…";
        form.submit(); // does not fire this handler again
      } catch (error) {
        status.textContent = "The browser check failed; please try again.";
        button.disabled = false;
        console.error(error);
      }
    });
  }
})();
