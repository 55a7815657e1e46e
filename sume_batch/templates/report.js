"use strict";
// The gallery of report.html, drawn a page of cards at a time from the job data block (#report-data,
// laid out as sume_batch/report/html.py says), and the filters, which choose among all the jobs and
// the failures table's rows. Job values become text (textContent) or properties, never markup.
// This script runs before the failures table is parsed (see report.html.j2): it finds the rows later.
(() => {
  const PAGE = 100; // cards per page
  const EAGER = 500; // a filter of more values gets its options when first used: 100,000 cost seconds
  const [ID, STATE, TYPE, MATRIX, PROMPT, FAILURE, OK, FILES, FACTS] = [0, 1, 2, 3, 4, 5, 6, 7, 8];
  const [IMAGE, VIDEO, MISSING] = [0, 1, 3];
  const data = JSON.parse(document.getElementById("report-data").textContent);
  const jobs = data.jobs;
  const gallery = document.getElementById("gallery");
  const filters = document.getElementById("filters");
  const selects = Array.from(filters.querySelectorAll("select[data-filter]"));
  const pagers = Array.from(document.querySelectorAll("[data-pager]"));
  const shown = document.getElementById("shown");

  // Each filter's option names, and each job's index among them (-1: a job without that axis).
  const axes = data.axes.map(() => new Int32Array(jobs.length).fill(-1));
  jobs.forEach((job, n) => {
    const matrix = job[MATRIX];
    for (let i = 0; i < matrix.length; i += 2) axes[matrix[i]][n] = matrix[i + 1];
  });
  const choices = {
    status: [data.states.map(([state]) => state), Int32Array.from(jobs, (job) => job[STATE])],
    type: [data.types, Int32Array.from(jobs, (job) => job[TYPE])],
  };
  data.axes.forEach(([, values], axis) => { choices["axis-" + axis] = [values, axes[axis]]; });

  let match = () => true; // whether the filters let job n through
  let matches = []; // the indexes of the jobs they let through, in report order
  let page = 0;
  let rows = []; // the failures table's rows and their jobs, once it is parsed

  const element = (tag, className, text) => {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  };

  const media = (job) => {
    const box = element("div", "media");
    for (const [kind, href] of job[FILES]) {
      if (kind === IMAGE) {
        const image = element("img");
        image.loading = "lazy"; // before src, or the browser fetches it at once
        image.decoding = "async";
        image.alt = job[ID];
        image.src = href;
        box.append(image);
      } else if (kind === VIDEO) {
        const video = element("video");
        video.preload = "none";
        video.controls = true;
        video.setAttribute("aria-label", job[ID]);
        video.src = href;
        box.append(video);
      } else if (kind === MISSING) {
        box.append(element("div", "missing", "missing: " + decodeURIComponent(href.slice(href.lastIndexOf("/") + 1))));
      }
    }
    return box;
  };

  const links = (job) => {
    const list = element("ul", "files");
    for (const [kind, href] of job[FILES]) {
      if (kind === IMAGE || kind === VIDEO || kind === MISSING) continue;
      const link = element("a", "", decodeURIComponent(href.slice(href.lastIndexOf("/") + 1)));
      link.href = href;
      list.appendChild(element("li")).append(link);
    }
    return list;
  };

  const card = (n) => {
    const job = jobs[n];
    const [state, stateClass, words] = data.states[job[STATE]];
    const article = element("article", "card");
    article.dataset.n = String(n);
    const box = media(job);
    article.append(box.childElementCount ? box : element("div", "empty", job[OK] ? "no media" : words));
    const body = article.appendChild(element("div", "body"));
    const title = body.appendChild(element("div", "title"));
    title.append(element("strong", "", job[ID]), element("span", "badge " + stateClass, state));
    const chips = body.appendChild(element("div", "chips"));
    chips.append(element("span", "chip", data.types[job[TYPE]]));
    const matrix = job[MATRIX];
    for (let i = 0; i < matrix.length; i += 2) {
      const [axis, values] = data.axes[matrix[i]];
      chips.append(element("span", "chip", axis + "=" + values[matrix[i + 1]]));
    }
    if (job[FACTS]) body.append(element("p", "facts", job[FACTS]));
    if (job[PROMPT]) body.append(element("p", "prompt", job[PROMPT]));
    if (job[FAILURE] !== null) body.append(element("div", "reason", job[FAILURE]));
    const files = links(job);
    if (files.childElementCount) body.append(files);
    return article;
  };

  const pageCount = () => Math.max(1, Math.ceil(matches.length / PAGE));

  const button = (label, target, count) => {
    const node = element("button", "", label);
    node.type = "button";
    node.dataset.page = String(target);
    node.disabled = target < 0 || target >= count;
    return node;
  };

  const pager = (count) => {
    // First, last and the pages near this one, a gap where pages are left out.
    const near = [0, page - 2, page - 1, page, page + 1, page + 2, count - 1];
    const numbers = [...new Set(near)].filter((n) => n >= 0 && n < count).sort((a, b) => a - b);
    const items = [button("‹ Previous", page - 1, count)];
    numbers.forEach((n, i) => {
      if (i > 0 && n > numbers[i - 1] + 1) items.push(element("span", "gap", "…"));
      const number = button(String(n + 1), n, count);
      if (n === page) number.setAttribute("aria-current", "page");
      items.push(number);
    });
    items.push(button("Next ›", page + 1, count));
    return items;
  };

  const draw = () => {
    const cards = document.createDocumentFragment();
    for (const n of matches.slice(page * PAGE, (page + 1) * PAGE)) cards.append(card(n));
    if (!matches.length) cards.append(element("p", "sub", "No job matches these filters."));
    gallery.replaceChildren(cards);
    const count = pageCount();
    for (const nav of pagers) {
      nav.replaceChildren(...pager(count));
      nav.hidden = count < 2;
    }
  };

  const filterRows = () => {
    for (const [row, n] of rows) row.hidden = !match(n);
  };

  const apply = () => {
    const wanted = selects
      .filter((select) => select.value !== "")
      .map((select) => [choices[select.dataset.filter][1], Number(select.value)]);
    match = (n) => wanted.every(([of, value]) => of[n] === value);
    matches = [];
    for (let n = 0; n < jobs.length; n += 1) if (match(n)) matches.push(n);
    filterRows();
    shown.textContent = String(matches.length);
    page = 0;
    draw();
  };

  const fill = (select) => {
    if (select.options.length > 1) return;
    const options = document.createDocumentFragment();
    choices[select.dataset.filter][0].forEach((name, n) => options.append(new Option(name, String(n))));
    select.append(options);
  };

  for (const select of selects) {
    if (choices[select.dataset.filter][0].length <= EAGER) fill(select);
    for (const event of ["focus", "pointerdown"]) select.addEventListener(event, () => fill(select));
    select.addEventListener("change", apply);
  }
  document.getElementById("reset").addEventListener("click", () => {
    for (const select of selects) select.value = "";
    apply();
  });
  for (const nav of pagers) {
    nav.addEventListener("click", (event) => {
      const target = event.target.closest("button[data-page]");
      if (!target || target.disabled) return;
      page = Number(target.dataset.page);
      draw();
      if (nav === pagers[pagers.length - 1]) filters.scrollIntoView(); // from the foot of a page to its top
    });
  }
  document.addEventListener("DOMContentLoaded", () => {
    rows = Array.from(document.querySelectorAll("#failures tbody tr"), (row) => [row, Number(row.dataset.n)]);
    filterRows();
  });
  filters.hidden = false;
  apply();
})();
