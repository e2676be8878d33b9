// The API pages render with every request off this host blocked, as on a plant network with no
// internet access: Debian's chromium (never a downloaded browser) driven by playwright-core.
//
//   node tests/js/docs_offline.js BASE_URL
//
// Opens BASE_URL/docs (Swagger UI) and BASE_URL/redoc (ReDoc), aborting any request whose host is
// not the service's, and checks that each page renders the API's operations, that nothing off
// host reached the network, and that the pages' Content-Security-Policy blocked nothing of
// their own (it may keep a request from leaving the host: that is its job).
// Prints a JSON summary on stdout; exits 1 with the failed check on stderr.
"use strict";
const { chromium } = require("playwright-core");

const CHROMIUM = "/usr/bin/chromium";
const ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];
const base = process.argv[2];
const host = new URL(base).host;
// cspViolations: what the pages' policy blocked of their own (must be none); cspOffHost: what
// it kept from leaving the host (ReDoc's "API docs by Redocly" logo link is one).
const summary = {
  blocked: [], failed: [], cspViolations: [], cspOffHost: [], swagger: {}, redoc: {},
};

function offHost(message) {
  const urls = message.match(/https?:\/\/[^'" ]+/g) || [];
  return urls.length > 0 && urls.every((u) => new URL(u).host !== host);
}

function check(ok, what) {
  if (!ok) throw new Error(`check failed: ${what}`);
}

async function main() {
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS });
  try {
    const context = await browser.newContext();
    // The network beyond this host is gone: abort (and note) anything else.
    await context.route("**/*", (route) => {
      const url = new URL(route.request().url());
      if (url.host === host || url.protocol === "data:" || url.protocol === "blob:") {
        return route.continue();
      }
      summary.blocked.push(route.request().url());
      return route.abort("internetdisconnected");
    });
    const page = await context.newPage();
    page.on("requestfailed", (r) => summary.failed.push(`${r.url()}: ${r.failure()?.errorText}`));
    page.on("console", (m) => {
      if (/Content Security Policy/i.test(m.text())) {
        (offHost(m.text()) ? summary.cspOffHost : summary.cspViolations).push(m.text());
      }
    });

    await page.goto(`${base}/docs`, { waitUntil: "load" });
    await page.waitForSelector(".swagger-ui .opblock", { timeout: 30000 });
    const paths = await page.$$eval(".opblock-summary-path", (els) =>
      els.map((e) => e.getAttribute("data-path") || e.textContent.trim()));
    summary.swagger.operations = paths.length;
    summary.swagger.title = await page.$eval(".swagger-ui .info .title", (e) => e.textContent);
    check(paths.includes("/v1/records"), "Swagger UI lists POST /v1/records");
    // Expand one operation: its parameters and responses render from the schema.
    await page.click("#operations-records-submit_record_v1_records_post .opblock-summary");
    await page.waitForSelector("#operations-records-submit_record_v1_records_post .responses-table");
    summary.swagger.expanded = true;

    await page.goto(`${base}/redoc`, { waitUntil: "load" });
    await page.waitForSelector("[data-section-id^='operation/']", { timeout: 30000 });
    summary.redoc.operations = await page.$$eval(
      "[data-section-id^='operation/']", (els) => els.length);
    check(summary.redoc.operations >= 10, "ReDoc renders the operations");

    check(summary.blocked.length === 0, `nothing off host requested: ${summary.blocked}`);
    check(summary.cspViolations.length === 0,
      `CSP blocked nothing of the pages' own: ${summary.cspViolations}`);
    process.stdout.write(JSON.stringify(summary) + "\n");
  } finally {
    await browser.close();
  }
}

main().catch((err) => {
  process.stdout.write(JSON.stringify({ ...summary, error: String(err.message || err) }) + "\n");
  process.stderr.write(`${err.stack || err}\n`);
  process.exit(1);
});
