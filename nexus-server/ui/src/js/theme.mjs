// Light/dark theme: the choice persists in localStorage; until the user picks one, the UI follows
// prefers-color-scheme (theme.js applied it before the first paint).

const KEY = "nexus.theme";
const listeners = new Set();

export function currentTheme() {
  return document.documentElement.getAttribute("data-theme") === "dark" ? "dark" : "light";
}

function apply(theme) {
  document.documentElement.setAttribute("data-theme", theme);
  for (const b of document.querySelectorAll("[data-action=theme]")) {
    const i = b.querySelector("i");
    if (i) i.className = theme === "dark" ? "fa-solid fa-sun" : "fa-solid fa-moon";
    const label = b.querySelector(".theme-label");
    if (label) label.textContent = theme === "dark" ? "Light theme" : "Dark theme";
    b.setAttribute("title", theme === "dark" ? "Switch to the light theme" : "Switch to the dark theme");
  }
  for (const fn of listeners) fn(theme);
}

export function toggleTheme() {
  const next = currentTheme() === "dark" ? "light" : "dark";
  try {
    localStorage.setItem(KEY, next);
  } catch {
    // Storage refused: the switch still works for this page.
  }
  apply(next);
}

/** Calls `fn(theme)` whenever the theme changes. */
export function onThemeChange(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

export function initTheme() {
  apply(currentTheme());
  const mq = window.matchMedia("(prefers-color-scheme: dark)");
  mq.addEventListener("change", (e) => {
    let saved = null;
    try {
      saved = localStorage.getItem(KEY);
    } catch {
      saved = null;
    }
    if (!saved) apply(e.matches ? "dark" : "light");
  });
}

/** A CSS custom property of the current theme (for Chart.js colours). */
export function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}
