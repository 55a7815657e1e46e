"use strict";
// The review page (sume_batch/report/review.py): takes laid out by two matrix axes, picked, rejected,
// rated and commented with the keyboard or a tap; decisions exported as reviews/<campaign>.yaml or,
// when the page is served on loopback (`sume-batch review --serve`), saved there at once.
// Job values become text (textContent) or properties, never markup.
(() => {
  const [ID, KEY, VALUES, PROMPT, FACTS, FILES] = [0, 1, 2, 3, 4, 5];
  const [IMAGE, VIDEO] = [0, 1];
  const data = JSON.parse(document.getElementById("review-data").textContent);
  const decisions = data.decisions; // job key → {job, outputs: {sha256: {decision, rating, comment, file, at}}}
  const grid = document.getElementById("grid");
  const rowsAxis = document.getElementById("rows");
  const columnsAxis = document.getElementById("columns");
  const show = document.getElementById("show");
  const status = document.getElementById("status");
  const lightbox = document.getElementById("lightbox");
  let current = 0; // index in `order`
  let order = [];

  const element = (tag, className, text) => {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  };

  const marks = (job) => job[FILES].map(([, , sha]) => (decisions[job[KEY]] || { outputs: {} }).outputs[sha] || {});
  const stateOf = (job) => { // as sume_batch/reviews.py's state_of says
    const decided = (decisions[job[KEY]] || {}).outputs || {};
    const present = job[FILES].map(([, , sha]) => decided[sha]).filter(Boolean);
    const current = present.map((mark) => mark.decision);
    if (current.includes("pick")) return "picked";
    if (current.includes("reject")) return "rejected";
    const stale = !present.length && Object.values(decided).some((mark) => mark.decision);
    return stale ? "stale" : "unreviewed";
  };

  for (const select of [rowsAxis, columnsAxis]) {
    select.append(new Option("(none)", "-1"));
    data.axes.forEach((axis, n) => select.append(new Option(axis, String(n))));
  }
  rowsAxis.value = data.axes.length > 0 ? "0" : "-1";
  columnsAxis.value = data.axes.length > 1 ? "1" : "-1";

  const tile = (job, n) => {
    const node = element("article", "tile " + stateOf(job));
    node.tabIndex = -1;
    node.dataset.n = String(n);
    const media = node.appendChild(element("div", "media"));
    for (const [kind, href] of job[FILES]) {
      const item = element(kind === VIDEO ? "video" : "img");
      if (kind === IMAGE) { item.loading = "lazy"; item.alt = job[ID]; }
      if (kind === VIDEO) { item.preload = "metadata"; item.controls = true; }
      if (kind === IMAGE || kind === VIDEO) { item.src = href; media.append(item); }
    }
    node.append(element("strong", "", job[ID]), element("p", "facts", job[FACTS]));
    node.append(element("p", "prompt", job[PROMPT] || ""));
    const mark = marks(job).find((one) => one.rating || one.comment) || {};
    const note = [stateOf(job), mark.rating ? "★" + mark.rating : "", mark.comment || ""].filter(Boolean).join(" · ");
    node.append(element("p", "state", note));
    const buttons = node.appendChild(element("div", "buttons"));
    for (const [label, action] of [["Pick", "pick"], ["Reject", "reject"], ["Clear", "clear"]]) {
      const button = buttons.appendChild(element("button", "", label));
      button.type = "button";
      button.addEventListener("click", () => { select(n); decide(action); });
    }
    node.addEventListener("click", (event) => { if (event.target.tagName !== "BUTTON") select(n); });
    node.addEventListener("dblclick", () => open(n));
    return node;
  };

  const draw = () => {
    const rows = Number(rowsAxis.value), columns = Number(columnsAxis.value);
    const wanted = show.value;
    const jobs = data.jobs.map((job, n) => [job, n]).filter(([job]) => !wanted || stateOf(job) === wanted);
    const values = (axis) => axis < 0 ? [""] : [...new Set(jobs.map(([job]) => job[VALUES][axis]))];
    const rowValues = values(rows), columnValues = values(columns);
    grid.replaceChildren();
    order = [];
    const table = grid.appendChild(element("table"));
    const head = table.appendChild(element("tr"));
    const named = (axis, value) => axis < 0 ? "" : value === "" ? "(no " + data.axes[axis] + ")" : data.axes[axis] + "=" + value;
    head.append(element("th"), ...columnValues.map((value) => element("th", "", named(columns, value))));
    for (const rowValue of rowValues) {
      const line = table.appendChild(element("tr"));
      line.append(element("th", "", named(rows, rowValue)));
      for (const columnValue of columnValues) {
        const cell = line.appendChild(element("td"));
        for (const [job, n] of jobs) {
          if ((rows < 0 || job[VALUES][rows] === rowValue) && (columns < 0 || job[VALUES][columns] === columnValue)) {
            cell.append(tile(job, n));
            order.push(n);
          }
        }
      }
    }
    const counts = data.jobs.reduce((tally, job) => { tally[stateOf(job)] = (tally[stateOf(job)] || 0) + 1; return tally; }, {});
    status.textContent = Object.entries(counts).map(([state, count]) => count + " " + state).join(" · ");
    select(Math.min(current, Math.max(order.length - 1, 0)), true);
  };

  const tileOf = (position) => grid.querySelector('[data-n="' + order[position] + '"]');
  const select = (n, isPosition) => {
    const position = isPosition ? n : order.indexOf(n);
    if (position < 0 || position >= order.length) return;
    for (const node of grid.querySelectorAll(".tile.current")) node.classList.remove("current");
    current = position;
    const node = tileOf(position);
    node.classList.add("current");
    node.focus({ preventScroll: true });
    node.scrollIntoView({ block: "nearest" });
  };

  const decide = (action, value) => {
    if (!order.length) return;
    const job = data.jobs[order[current]];
    const entry = decisions[job[KEY]] || (decisions[job[KEY]] = { job: job[ID], outputs: {} });
    const at = new Date().toISOString().replace(/\.\d+Z$/, "Z");
    for (const [, href, sha] of job[FILES]) {
      const mark = entry.outputs[sha] || (entry.outputs[sha] = {});
      if (action === "clear") { delete entry.outputs[sha]; continue; }
      if (action === "pick" || action === "reject") mark.decision = action;
      if (action === "rate") mark.rating = value;
      if (action === "comment") mark.comment = value;
      mark.file = decodeURIComponent(href.slice(href.lastIndexOf("/") + 1));
      mark.at = at;
    }
    save();
    const position = current;
    draw();
    select(action === "pick" || action === "reject" ? position + 1 : position, true);
  };

  const yaml = () => {
    const text = (value) => JSON.stringify(String(value)); // a JSON string is a YAML double-quoted scalar
    const lines = ["# Review decisions (sume-batch review): keyed by job key and output sha256, kept in git.",
      "version: 1", "campaign: " + text(data.campaign), "decisions:"];
    for (const key of Object.keys(decisions).sort()) {
      const entry = decisions[key];
      lines.push("  " + text(key) + ":", "    job: " + text(entry.job), "    outputs:");
      for (const [sha, mark] of Object.entries(entry.outputs)) {
        lines.push("      " + text(sha) + ":");
        for (const name of ["decision", "rating", "comment", "file", "at"]) {
          if (mark[name] !== undefined) lines.push("        " + name + ": " + (name === "rating" ? String(mark[name]) : text(mark[name])));
        }
      }
      if (!Object.keys(entry.outputs).length) lines[lines.length - 1] = "    outputs: {}";
    }
    return lines.join("\n") + "\n";
  };

  const save = () => {
    if (!data.served) return;
    fetch("decisions", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(decisions) })
      .then((answer) => { document.getElementById("saved").textContent = answer.ok ? "saved to " + data.file : "not saved: " + answer.status; })
      .catch(() => { document.getElementById("saved").textContent = "not saved: the server is gone (export them)"; });
  };

  document.getElementById("export").addEventListener("click", () => {
    const link = element("a");
    link.href = URL.createObjectURL(new Blob([yaml()], { type: "text/yaml" }));
    link.download = data.campaign + ".yaml";
    document.body.append(link);
    link.click();
    link.remove();
  });

  const open = (n) => {
    const job = data.jobs[n];
    const body = lightbox.querySelector(".body");
    body.replaceChildren(element("strong", "", job[ID]));
    for (const [kind, href] of job[FILES]) {
      const item = element(kind === VIDEO ? "video" : "img");
      item.src = href;
      if (kind === VIDEO) item.controls = true;
      if (kind === IMAGE || kind === VIDEO) body.append(item);
    }
    body.append(element("p", "prompt", job[PROMPT] || ""));
    lightbox.hidden = false;
  };
  lightbox.addEventListener("click", () => { lightbox.hidden = true; });

  document.addEventListener("keydown", (event) => {
    if (event.target.tagName === "SELECT" || event.target.tagName === "INPUT" || event.ctrlKey || event.metaKey || event.altKey) return;
    const keys = {
      ArrowRight: () => select(current + 1, true), j: () => select(current + 1, true),
      ArrowLeft: () => select(current - 1, true), k: () => select(current - 1, true),
      p: () => decide("pick"), x: () => decide("reject"), u: () => decide("clear"),
      c: () => { const text = window.prompt("Comment"); if (text !== null) decide("comment", text); },
      Enter: () => order.length && open(order[current]), Escape: () => { lightbox.hidden = true; },
    };
    if (keys[event.key]) { event.preventDefault(); keys[event.key](); }
    else if (/^[1-5]$/.test(event.key)) { event.preventDefault(); decide("rate", Number(event.key)); }
  });
  for (const select of [rowsAxis, columnsAxis, show]) select.addEventListener("change", draw);
  document.getElementById("controls").hidden = false;
  draw();
})();
