// Model output → safe HTML. Three layers, so an answer can never run script:
//  1. marked renders Markdown, with raw HTML in the answer escaped to visible text (a model that
//     writes `<img onerror=...>` shows exactly that) and images turned into plain links;
//  2. DOMPurify sanitizes the result (no script, handlers, forms, frames, styles, images);
//  3. the page's CSP (script-src 'self') would block any inline script that slipped through.

import { Marked } from "../vendor/marked.esm.js";
import DOMPurify from "../vendor/purify.es.mjs";
import hljs from "../vendor/hljs/core.mjs";
import bash from "../vendor/hljs/languages/bash.js";
import c from "../vendor/hljs/languages/c.js";
import cpp from "../vendor/hljs/languages/cpp.js";
import css from "../vendor/hljs/languages/css.js";
import diff from "../vendor/hljs/languages/diff.js";
import go from "../vendor/hljs/languages/go.js";
import java from "../vendor/hljs/languages/java.js";
import javascript from "../vendor/hljs/languages/javascript.js";
import json from "../vendor/hljs/languages/json.js";
import markdown from "../vendor/hljs/languages/markdown.js";
import python from "../vendor/hljs/languages/python.js";
import rust from "../vendor/hljs/languages/rust.js";
import shell from "../vendor/hljs/languages/shell.js";
import sql from "../vendor/hljs/languages/sql.js";
import typescript from "../vendor/hljs/languages/typescript.js";
import xml from "../vendor/hljs/languages/xml.js";
import yaml from "../vendor/hljs/languages/yaml.js";
import { h, icon, copyText } from "./dom.js";

const LANGS = { bash, c, cpp, css, diff, go, java, javascript, json, markdown, python, rust, shell, sql, typescript, xml, yaml };
for (const [name, def] of Object.entries(LANGS)) hljs.registerLanguage(name, def);
const ALIASES = { sh: "bash", zsh: "bash", console: "shell", js: "javascript", jsx: "javascript", ts: "typescript", tsx: "typescript", py: "python", rs: "rust", html: "xml", svg: "xml", yml: "yaml", md: "markdown", "c++": "cpp", golang: "go" };

function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (ch) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[ch]);
}

const marked = new Marked({
  gfm: true,
  breaks: true,
  renderer: {
    // Raw HTML from the model is shown, not interpreted.
    html(token) {
      const text = escapeHtml(token.text || token.raw || "");
      return token.block ? `<p class="md-raw">${text}</p>\n` : text;
    },
    image(token) {
      const label = token.text || token.href || "image";
      return `<a href="${escapeHtml(token.href || "")}" class="md-image-link">[image: ${escapeHtml(label)}]</a>`;
    },
    code(token) {
      const raw = (token.lang || "").match(/^\S*/)[0].toLowerCase();
      const lang = ALIASES[raw] || raw;
      let body;
      if (lang && hljs.getLanguage(lang)) {
        try {
          body = hljs.highlight(token.text, { language: lang, ignoreIllegals: true }).value;
        } catch {
          body = escapeHtml(token.text);
        }
      } else {
        body = escapeHtml(token.text);
      }
      return `<pre class="code-block"><div class="code-head"><span class="code-lang">${escapeHtml(raw || "text")}</span></div><code class="hljs${lang ? ` language-${escapeHtml(lang)}` : ""}">${body}</code></pre>\n`;
    },
  },
});

const PURIFY = {
  FORBID_TAGS: ["img", "style", "form", "input", "button", "textarea", "select", "option", "iframe", "frame", "object", "embed", "svg", "math", "video", "audio", "source", "link", "meta", "base"],
  FORBID_ATTR: ["style", "srcset", "action", "formaction"],
  ALLOW_DATA_ATTR: false,
  ALLOW_ARIA_ATTR: false,
};

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    const href = node.getAttribute("href") || "";
    if (!/^(https?:|mailto:|#)/i.test(href)) node.removeAttribute("href");
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer nofollow");
  }
});

/** Markdown → sanitized HTML string. */
export function renderMarkdown(text) {
  const html = marked.parse(String(text || ""), { async: false });
  return DOMPurify.sanitize(html, PURIFY);
}

/** Renders `text` into `el` and adds a copy button to each code block. */
export function setMarkdown(el, text) {
  el.innerHTML = renderMarkdown(text);
  for (const pre of el.querySelectorAll("pre.code-block")) {
    const head = pre.querySelector(".code-head");
    const code = pre.querySelector("code");
    if (!head || !code) continue;
    head.appendChild(
      h("button", { type: "button", class: "code-copy", title: "Copy code", "aria-label": "Copy code", on: { click: () => copyText(code.textContent || "", "Code copied") } }, icon("copy", "regular"), h("span", { text: "Copy" })),
    );
  }
}
