#!/usr/bin/env node
/*
 * dashboard.test.js - the gateway's dashboard page in a real browser.
 *
 * Drives Debian's Chromium (/usr/bin/chromium, or $CHROMIUM) with
 * playwright-core against a running logpipe (gateway, services, Kafka,
 * PostgreSQL): opens the page, checks the pipeline picture fills in, starts
 * the generator from the page's form, sees the counts grow at the
 * generator, in raw-logs and in PostgreSQL, stops it and sees them settle,
 * then posts one uniquely worded event and finds it with the search box.
 * Each check prints "ok" or "FAIL"; the last line is "N passed, N failed"
 * and the exit status is 0 only when nothing failed.
 *
 *   node dashboard.test.js --url http://127.0.0.1:8080 [--screenshot FILE]
 *                          [--api-key KEY] [--timeout-s 90]
 *
 * Chromium is started as the machine notes require: headless, no sandbox
 * (we may be root), no GPU, no QUIC, and none of its background network
 * traffic (the machine's network is closed), with a fresh profile directory.
 */
"use strict";

const fs = require("fs");
const os = require("os");
const path = require("path");
const { chromium } = require("playwright-core");

function parseArgs(argv) {
  const a = { url: "http://127.0.0.1:8080", screenshot: "", apiKey: "", timeoutS: 90 };
  for (let i = 2; i < argv.length; i++) {
    const k = argv[i], v = argv[i + 1];
    if (k === "--url") { a.url = v; i++; }
    else if (k === "--screenshot") { a.screenshot = v; i++; }
    else if (k === "--api-key") { a.apiKey = v; i++; }
    else if (k === "--timeout-s") { a.timeoutS = Number(v); i++; }
    else { console.error("unknown argument " + k); process.exit(2); }
  }
  a.url = a.url.replace(/\/+$/, "");
  return a;
}

const args = parseArgs(process.argv);
let passed = 0, failed = 0;

function ok(name, cond, detail) {
  if (cond) { passed++; console.log("ok    " + name); }
  else { failed++; console.log("FAIL  " + name + (detail ? ": " + detail : "")); }
  return cond;
}

/* The integer shown in element id ("1,234" -> 1234; "–" -> null). */
async function shown(page, id) {
  const t = (await page.textContent("#" + id)) || "";
  const n = Number(t.replace(/[^0-9]/g, ""));
  return /[0-9]/.test(t) ? n : null;
}

/* Polls fn until it returns a truthy value or seconds pass; returns the last value. */
async function waitFor(fn, seconds) {
  const end = Date.now() + seconds * 1000;
  let v;
  while (Date.now() < end) {
    try { v = await fn(); } catch (e) { v = null; }
    if (v) return v;
    await new Promise((r) => setTimeout(r, 500));
  }
  return v;
}

async function main() {
  const exe = process.env.CHROMIUM || "/usr/bin/chromium";
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "logpipe-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: exe,
    headless: true,
    viewport: { width: 1400, height: 1100 },
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const page = context.pages()[0] || (await context.newPage());
  const problems = [];
  page.on("pageerror", (e) => problems.push("page error: " + e.message));
  page.on("console", (m) => { if (m.type() === "error") problems.push("console: " + m.text()); });
  const T = args.timeoutS;

  try {
    if (args.apiKey) await page.addInitScript((k) => localStorage.setItem("logpipe.apikey", k), args.apiKey);
    const resp = await page.goto(args.url + "/", { waitUntil: "load", timeout: 15000 });
    ok("GET / answers 200 text/html", resp && resp.status() === 200 &&
       /text\/html/.test(resp.headers()["content-type"] || ""), resp && resp.status());
    ok("the page is titled", /logpipe/.test(await page.title()));

    /* The picture fills in from /api/v1/pipeline. */
    const ready = await waitFor(async () => (await shown(page, "count-raw")) !== null &&
                                           (await shown(page, "count-postgres")) !== null, 30);
    ok("raw-logs and PostgreSQL counts appear", ready,
       "raw " + (await page.textContent("#count-raw")) + ", postgres " + (await page.textContent("#count-postgres")));
    const boxes = await page.$$eval(".flow .stage", (els) => els.map((e) => e.id));
    ok("every stage is drawn", ["st-generator", "st-producer", "st-raw", "st-enricher", "st-enriched",
       "st-consumer", "st-postgres", "st-dlq"].every((id) => boxes.includes(id)), boxes.join(","));
    ok("arrows join the stages", (await page.$$(".flow .arrow")).length >= 6);
    const allUp = await waitFor(async () => /all stages up/.test(await page.textContent("#overall")), 30);
    ok("header says all stages are up", allUp, await page.textContent("#overall"));
    const svcRows = await page.$$eval("#breakers tbody tr", (rs) => rs.map((r) => r.dataset.service));
    ok("breaker table lists the five services", ["producer", "metadata", "enricher", "consumer", "generator"]
       .every((s) => svcRows.includes(s)), svcRows.join(","));
    ok("breaker states are shown", (await page.$$("#breakers .chip")).length > 0);

    /* Start the generator from the form. */
    const before = {
      gen: await shown(page, "count-generator") || 0,
      raw: await shown(page, "count-raw") || 0,
      pg: await shown(page, "count-postgres") || 0,
    };
    /* A modest rate: the same test runs against sanitizer builds on a busy
     * machine, where a big backlog would only make it slow. */
    await page.fill("#gen-rate", "50");
    await page.fill("#gen-size", "300");
    await page.fill("#gen-duration", "0");
    await page.click("#gen-start");
    const streaming = await waitFor(async () => /streaming/.test(await page.textContent("#streaming")), 20);
    ok("starting the generator shows it streaming", streaming, await page.textContent("#gen-note"));
    const grew = await waitFor(async () => {
      const g = await shown(page, "count-generator"), r = await shown(page, "count-raw");
      return g >= before.gen + 150 && r >= before.raw + 150 ? { g, r } : null;
    }, T);
    ok("counts grow at the generator and in raw-logs", grew,
       JSON.stringify({ before, now: { gen: await shown(page, "count-generator"), raw: await shown(page, "count-raw") } }));
    const stored = await waitFor(async () => (await shown(page, "count-postgres")) > before.pg, T);
    ok("the PostgreSQL count grows", stored, before.pg + " -> " + (await shown(page, "count-postgres")));
    const rateText = await page.textContent("#rate-raw");
    ok("the raw-logs rate is shown", /[1-9]/.test(rateText), rateText);
    const chartInk = await page.$eval("#chart", (cv) => {
      const d = cv.getContext("2d").getImageData(0, 0, cv.width, cv.height).data;
      let n = 0;
      for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 0 && !(d[i] > 200 && d[i + 1] > 200 && d[i + 2] > 200) &&
        Math.abs(d[i] - d[i + 1]) + Math.abs(d[i + 1] - d[i + 2]) > 60) n++;
      return n;
    });
    ok("the rate chart draws coloured lines", chartInk > 50, chartInk + " coloured pixels");
    if (args.screenshot) {
      await page.screenshot({ path: args.screenshot.replace(/(\.png)?$/, "-streaming.png"), fullPage: true });
    }

    /* Stop it: the page says idle and the generator count settles. */
    await page.click("#gen-stop");
    const idle = await waitFor(async () => /idle/.test(await page.textContent("#streaming")), 20);
    ok("stopping the generator shows it idle", idle, await page.textContent("#streaming"));
    const settled = await waitFor(async () => {
      const a = await shown(page, "count-generator");
      await new Promise((r) => setTimeout(r, 2500));
      const b = await shown(page, "count-generator");
      return a !== null && a === b;
    }, 30);
    ok("the generator count stops growing", settled);
    const caught = await waitFor(async () => {
      const r = await shown(page, "count-raw"), p = await shown(page, "count-postgres");
      return r !== null && p !== null && p - before.pg === r - before.raw;
    }, T);
    ok("every generated event reaches PostgreSQL (stored = raw-logs, counted from the start)", caught,
       "raw " + ((await shown(page, "count-raw")) - before.raw) + ", stored " + ((await shown(page, "count-postgres")) - before.pg));

    /* Search: one event with a unique word, found through the search box. */
    const word = "browserprobe" + Date.now().toString(36);
    const headers = { "Content-Type": "application/json" };
    if (args.apiKey) headers["X-API-Key"] = args.apiKey;
    const post = await page.request.post(args.url + "/api/logs", {
      headers, data: { service: "dashboard-test", level: "WARN", host: "web-1", message: "dashboard search " + word },
    });
    ok("an event is accepted through the gateway", post.status() === 202, post.status());
    await page.fill("#search-q", word);
    const found = await waitFor(async () => {
      await page.click("#search-go");
      await page.waitForFunction(() => !/searching/.test(document.getElementById("search-note").textContent), null, { timeout: 10000 });
      const rows = await page.$$eval("#search-results tbody tr", (rs) => rs.map((r) => r.textContent));
      return rows.length === 1 && rows[0].includes(word) ? rows : null;
    }, 45);
    ok("the search box finds it", found, await page.textContent("#search-note"));
    if (found) ok("the result shows its level and service", /WARN/.test(found[0]) && /dashboard-test/.test(found[0]), found[0]);

    /* Live: the search's filters on the live tail; an event posted after it
       started shows up as a row, then Stop ends it. */
    await page.click("#search-live");
    const waiting = await waitFor(async () => /waiting for events/.test(await page.textContent("#search-note")), 15);
    ok("the Live button opens a tail", waiting, await page.textContent("#search-note"));
    const post2 = await page.request.post(args.url + "/api/logs", {
      headers, data: { service: "dashboard-test", level: "ERROR", host: "web-1", message: "dashboard live " + word },
    });
    ok("a second event is accepted", post2.status() === 202, post2.status());
    const liveRow = await waitFor(async () => {
      const rows = await page.$$eval("#search-results tbody tr", (rs) => rs.map((r) => r.textContent));
      return rows.some((r) => r.includes("dashboard live " + word)) ? rows : null;
    }, 45);
    ok("the live tail shows the event once stored", liveRow, await page.textContent("#search-note"));
    await page.click("#search-live");
    const stopped = await waitFor(async () => /live: stopped/.test(await page.textContent("#search-note")), 10);
    ok("Stop ends the live tail", stopped, await page.textContent("#search-note"));

    if (args.screenshot) await page.screenshot({ path: args.screenshot, fullPage: true });
    ok("no script errors on the page", problems.length === 0, problems.slice(0, 5).join(" | "));
  } catch (e) {
    ok("the test ran to its end", false, e && e.stack ? e.stack.split("\n").slice(0, 3).join(" ") : String(e));
    if (args.screenshot) await page.screenshot({ path: args.screenshot, fullPage: true }).catch(() => {});
  } finally {
    await context.close().catch(() => {});
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

main().then(() => {
  console.log(passed + " passed, " + failed + " failed");
  process.exit(failed ? 1 : 0);
}, (e) => {
  console.log("FAIL  " + (e && e.message ? e.message : e));
  console.log(passed + " passed, " + (failed + 1) + " failed");
  process.exit(1);
});
