// Form and delete flows shared by the management pages.

import { del } from "./api.js";
import { confirmDialog, formError, toast } from "./dom.js";

/**
 * Wires `form` (Enter) and `save` (click) to `run()`. While it runs the button shows a spinner;
 * anything it throws (validation or API error) is shown in the `err` slot.
 */
export function bindSubmit(form, save, err, run) {
  const submit = async (e) => {
    if (e) e.preventDefault();
    if (save.disabled) return;
    formError(err, "");
    save.disabled = true;
    save.classList.add("busy");
    try {
      await run();
    } catch (ex) {
      formError(err, ex.message);
    } finally {
      save.disabled = false;
      save.classList.remove("busy");
    }
  };
  form.addEventListener("submit", submit);
  save.addEventListener("click", submit);
}

/** Asks, then DELETEs `path`; toasts `success` and calls `after()` once it is gone. */
export async function confirmDelete({ title, message, detail, confirmLabel = "Delete", path, success, after }) {
  const yes = await confirmDialog({ title, message, detail, confirmLabel, danger: true });
  if (!yes) return;
  try {
    await del(path);
    toast(success);
    after();
  } catch (e) {
    toast(e.message, "error");
  }
}
