// The dashboard's copy buttons: <button data-copy="ID"> copies the value (or text) of the element with that id.
document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const source = document.getElementById(button.dataset.copy);
  if (!source) return;
  const text = "value" in source ? source.value : source.textContent;
  const label = button.dataset.label || button.textContent;
  button.dataset.label = label;
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = "Copied";
  } catch (error) {
    if (source.select) source.select();
    button.textContent = "Press Ctrl+C (or ⌘C) to copy";
  }
  setTimeout(() => { button.textContent = label; }, 2500);
});

// A check still running: look again in a few seconds.
if (document.querySelector("[data-reload-while-running]")) {
  setTimeout(() => { window.location.reload(); }, 4000);
}
