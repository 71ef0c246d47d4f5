// The control panel's login: the token goes to POST /panel/login, which answers with
// an HttpOnly cookie and a redirect to /panel. Without script the form posts by itself;
// with it, a wrong token is told on this page instead of as a bare JSON answer.
//
// The bot prints ".../panel#token=..." at start: the fragment never reaches the server.
// It is taken out of the address bar at once, put in the field and submitted.
"use strict";

(() => {
  const form = document.getElementById("login-form");
  const input = document.getElementById("token");
  const submitButton = document.getElementById("login-submit");
  const error = document.getElementById("login-error");

  function showError(text) {
    error.textContent = text;
    error.hidden = !text;
  }

  async function logIn() {
    const token = input.value.trim();
    if (!token) {
      showError("Enter the token.");
      input.focus();
      return;
    }
    submitButton.disabled = true;
    showError("");
    try {
      // "manual": a right token answers 303 (an opaque redirect here); a wrong one 401.
      const response = await fetch(form.action, {
        method: "POST",
        headers: { "Content-Type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams({ token }),
        credentials: "same-origin",
        redirect: "manual",
        cache: "no-store",
      });
      if (response.type === "opaqueredirect" || response.ok) {
        location.replace("/panel");
        return;
      }
      let message = `HTTP ${response.status}`;
      try {
        const body = await response.json();
        if (body && typeof body.error === "string") message = body.error;
      } catch (_) { /* not JSON: keep the status */ }
      showError(`Not logged in: ${message}`);
      input.select();
    } catch (err) {
      showError(`Could not reach the bot: ${err.message || err}`);
    } finally {
      submitButton.disabled = false;
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    logIn();
  });

  function fromFragment() {
    const token = new URLSearchParams(location.hash.slice(1)).get("token");
    if (!token) return;
    history.replaceState(null, "", location.pathname + location.search); // out of the address bar and history
    input.value = token;
    logIn();
  }

  // The link pasted into a tab that shows this page already only changes the fragment.
  window.addEventListener("hashchange", fromFragment);
  fromFragment();
})();
