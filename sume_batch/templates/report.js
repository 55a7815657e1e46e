"use strict";
(() => {
  const selects = Array.from(document.querySelectorAll("select[data-filter]"));
  const items = Array.from(document.querySelectorAll("[data-job]"));
  const shown = document.getElementById("shown");
  const apply = () => {
    const wanted = selects.filter((s) => s.value !== "").map((s) => [s.dataset.filter, s.value]);
    let count = 0;
    for (const item of items) {
      const match = wanted.every(([name, value]) => item.getAttribute("data-" + name) === value);
      item.hidden = !match;
      if (match && item.classList.contains("card")) count += 1;
    }
    shown.textContent = String(count);
  };
  for (const select of selects) select.addEventListener("change", apply);
  document.getElementById("reset").addEventListener("click", () => {
    for (const select of selects) select.value = "";
    apply();
  });
  apply();
})();
