// Applies the saved theme (or the system's, on a first visit) before the first paint. Loaded as a
// classic, blocking script from <head>; the CSP forbids inline scripts.
(function () {
  "use strict";
  var saved = null;
  try {
    saved = window.localStorage.getItem("nexus.theme");
  } catch (e) {
    saved = null;
  }
  var dark = window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches;
  var theme = saved === "dark" || saved === "light" ? saved : dark ? "dark" : "light";
  document.documentElement.setAttribute("data-theme", theme);
})();
