// End-to-end test of the dashboard: Debian's chromium (never a downloaded browser), driven by
// playwright-core, against a live service with demo data (tests/ui/test_dashboard_e2e.py starts
// it). Logs in as the OEM, the auditor and a supplier through the real key-file form (and once
// with a pasted access token), clicks through every page, checks content and role scoping,
// measures each page's load time and saves screenshots.
//
//   node tests/js/dashboard_e2e.js CONFIG.json
//
// CONFIG: the service's ready.json (url, keys, keystorePassphrase, supplier, otherSupplier,
// incident, recordOfSupplier, recordOfOther, suppliers) plus outDir for the screenshots.
// Prints a JSON summary on stdout; exits 1 with the failed check on stderr.
"use strict";
const fs = require("fs");
const os = require("os");
const path = require("path");
const { chromium } = require("playwright-core");
const { ethers } = require("ethers");

const CHROMIUM = "/usr/bin/chromium";
const ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];
const LAPTOP = { width: 1366, height: 768 };
const TABLET = { width: 768, height: 1024 };
const PAGE_BUDGET_MS = 1000;

const cfg = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const base = cfg.url;
const outDir = cfg.outDir;
fs.mkdirSync(outDir, { recursive: true });
const summary = { timings: {}, screenshots: [], checks: 0, roles: [] };

function check(ok, what) {
  if (!ok) throw new Error(`check failed: ${what}`);
  summary.checks += 1;
}

async function loadTime(page) {
  // Navigation Timing Level 2: from navigation start to the end of the load event.
  await page.waitForLoadState("load");
  const ms = await page.evaluate(() => {
    const nav = performance.getEntriesByType("navigation")[0];
    return nav ? nav.loadEventEnd - nav.startTime : null;
  });
  return ms;
}

async function timed(page, key) {
  const ms = await loadTime(page);
  check(ms !== null && ms > 0, `${key}: navigation timing available`);
  summary.timings[key] = Math.round(ms);
  check(ms < PAGE_BUDGET_MS, `${key} loaded in ${Math.round(ms)} ms (budget ${PAGE_BUDGET_MS} ms)`);
}

async function shot(page, name, viewport = "laptop") {
  const file = path.join(outDir, `${name}-${viewport}.png`);
  await page.screenshot({ path: file, fullPage: true });
  summary.screenshots.push(file);
}

async function noSideways(page, what) {
  // Responsive: nothing wider than the viewport (tables scroll inside their own box).
  const wide = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(wide <= 1, `${what}: no horizontal page overflow (${wide}px too wide)`);
}

async function goto(page, url, key, expectStatus = 200) {
  const res = await page.goto(base + url);
  check(res !== null, `${url}: a response`);
  check(res.status() === expectStatus, `${url}: HTTP ${res.status()}, expected ${expectStatus}`);
  if (key) await timed(page, key);
  return res;
}

async function tablet(page, name) {
  await page.setViewportSize(TABLET);
  await page.waitForTimeout(50);
  await noSideways(page, `${name} on a tablet`);
  await shot(page, name, "tablet");
  await page.setViewportSize(LAPTOP);
}

async function session(role) {
  // A fresh profile (user-data-dir) per role: no cookie or cache carries over.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `qledger-e2e-${role}-`));
  const context = await chromium.launchPersistentContext(dir, {
    executablePath: CHROMIUM, args: ARGS, headless: true, viewport: LAPTOP,
    acceptDownloads: false, offline: false,
  });
  const page = context.pages()[0] || (await context.newPage());
  const problems = [];
  page.on("pageerror", (err) => problems.push(`page error: ${err.message}`));
  page.on("console", (msg) => {
    if (msg.type() === "error" && !/status of 4(01|03|04|22)/.test(msg.text())) {
      problems.push(`console error: ${msg.text()}`);
    }
  });
  page.on("request", (req) => {
    if (!req.url().startsWith(base) && !req.url().startsWith("data:")) {
      problems.push(`request outside the service: ${req.url()}`);
    }
  });
  // Start the renderer for the service's origin on a trivial URL, so that page timings
  // measure pages, not a fresh browser process spinning up (the service is not warmed).
  await page.goto(base + "/healthz");
  return { context, page, problems, dir };
}

async function close(s) {
  await s.context.close();
  fs.rmSync(s.dir, { recursive: true, force: true });
  check(s.problems.length === 0, `no browser errors: ${s.problems.join("; ")}`);
}

async function loginWithKey(page, keyFile, passphrase, landing, screenshot = false) {
  // Start from a protected page: the dashboard sends us to the login form and back.
  await page.goto(base + landing);
  check(page.url().startsWith(base + "/ui/login?next="), `unauthenticated ${landing} -> login`);
  await timed(page, `login-page-${path.basename(keyFile, ".json")}`);
  if (screenshot) {
    await shot(page, "login");
    await tablet(page, "login");
  }
  await page.setInputFiles("#keyfile", keyFile);
  if (passphrase) await page.fill("#passphrase", passphrase);
  await Promise.all([
    page.waitForURL((u) => !u.pathname.startsWith("/ui/login"), { timeout: 20000 }),
    page.click("#key-submit"),
  ]);
}

async function navTo(page, key, expectPath) {
  await Promise.all([page.waitForURL((u) => u.pathname.startsWith(expectPath)),
    page.click(`nav [data-nav="${key}"]`)]);
}

async function oem() {
  const s = await session("oem");
  const { page } = s;
  await loginWithKey(page, cfg.keys.oem, null, "/ui/suppliers", true);
  check(new URL(page.url()).pathname === "/ui/suppliers", "OEM returns to the ranking");
  await timed(page, "oem-ranking");
  check((await page.textContent("[data-test=who]")).includes("OEM"), "header shows OEM");
  const rows = await page.locator("[data-test=ranking-table] tbody tr").count();
  check(rows === cfg.suppliers.length, `ranking lists ${cfg.suppliers.length} suppliers (${rows})`);
  const scores = await page.locator("[data-test=ranking-table] tbody td.num.strong").allTextContents();
  const values = scores.map(Number);
  check(values.every((v, i) => i === 0 || values[i - 1] >= v), "ranking sorted by score");
  check(await page.locator("[data-test=ranking-chart] svg rect.bar").count() === rows, "one bar per supplier");
  check((await page.textContent("[data-test=ranking-chart]")).includes("credit score (points, 0-100)"),
    "ranking chart axis has its unit");
  const gates = await page.locator("[data-test=ranking-table] .gate").allTextContents();
  check(gates.length === rows && gates.every((g) => /pass|fail/.test(g)),
    "every supplier has a gate outcome");
  await shot(page, "oem-ranking");
  // Issue 20: on a tablet the ranking keeps its reasons column, in view without scrolling
  // the table sideways, and a failing gate shows the gate's own reason first.
  await page.setViewportSize(TABLET);
  await page.waitForTimeout(50);
  const header = page.locator("[data-test=ranking-table] th.reasons-col");
  check(await header.isVisible(), "tablet: the ranking's reasons column is visible");
  const cells = page.locator("[data-test=ranking-table] td[data-test=reasons]");
  check(await cells.count() === rows, "tablet: every row has its reasons cell");
  for (let i = 0; i < rows; i++) {
    const cell = cells.nth(i);
    check(await cell.isVisible(), `tablet: reasons of row ${i + 1} visible`);
    const box = await cell.boundingBox();
    check(box !== null && box.width > 40 && box.x + box.width <= TABLET.width + 1,
      `tablet: reasons of row ${i + 1} inside the 768 px viewport (${JSON.stringify(box)})`);
  }
  const failing = page.locator("[data-test=ranking-table] tbody tr", { has: page.locator(".gate.fail") });
  for (let i = 0; i < await failing.count(); i++) {
    const scored = (await failing.nth(i).locator("td.num.strong").textContent()).trim();
    if (scored === "insufficient evidence") continue;
    const firstReason = failing.nth(i).locator("td[data-test=reasons] > span").first();
    check((await firstReason.getAttribute("class")).includes("gate-reason"),
      `tablet: a failing supplier's first reason is the gate's own (row ${i + 1})`);
  }
  await page.setViewportSize(LAPTOP);
  await tablet(page, "oem-ranking");

  // Click through to a supplier.
  const first = page.locator("[data-test=ranking-table] tbody tr").first();
  const sid = await first.getAttribute("data-supplier");
  await Promise.all([page.waitForURL(`**/ui/suppliers/${sid}`), first.locator("a").click()]);
  await timed(page, "oem-supplier");
  check((await page.textContent("h1")).includes(sid), "supplier page heading");
  check(await page.locator("[data-test=waterfall] svg rect.step").count() >= 5, "SHAP waterfall drawn");
  check((await page.textContent("[data-test=waterfall]")).includes("score (points)"), "waterfall axis unit");
  check(await page.locator("[data-test=history] svg circle.dot").count() >= 2, "score history has points");
  check((await page.textContent("[data-test=history]")).includes("score (points)"), "history axis unit");
  check(await page.locator("[data-test=evidence] tbody tr").count() >= 6, "evidence counts by kind");
  check((await page.textContent("[data-test=evidence]")).includes("Anchored"), "anchoring status shown");
  check(await page.locator("[data-test=what-if], #wi-title").count() >= 1, "what-if section");
  await shot(page, "oem-supplier");
  await tablet(page, "oem-supplier");

  await navTo(page, "incidents", "/ui/incidents");
  await timed(page, "oem-incidents");
  check(await page.locator(`[data-incident="${cfg.incident}"]`).count() === 1, "incident listed");
  await shot(page, "oem-incidents");
  await Promise.all([page.waitForURL(`**/ui/incidents/${cfg.incident}`),
    page.click(`[data-incident="${cfg.incident}"] a`)]);
  await timed(page, "oem-incident");
  const shares = await page.locator("[data-test=matrix] tbody td.num.strong").allTextContents();
  const total = shares.map(Number).reduce((a, b) => a + b, 0);
  check(shares.length >= 2 && Math.abs(total - 100) < 0.5, `matrix weights sum to 100 % (${total})`);
  check((await page.textContent("[data-test=matrix-chart]")).includes("share of responsibility (%)"),
    "matrix chart axis unit");
  await shot(page, "oem-incident");
  await tablet(page, "oem-incident");

  await navTo(page, "records", "/ui/records");
  await timed(page, "oem-records");
  await shot(page, "oem-records");
  // An OEM reads only what it signed: a supplier's inspection is "not found" (as in the API).
  await goto(page, `/ui/records/${cfg.recordOfSupplier}`, null, 404);

  await navTo(page, "models", "/ui/models");
  await timed(page, "oem-models");
  check(await page.locator("[data-test=run]").count() >= 1, "federated run listed");
  check(await page.locator("text=✓ matches").count() >= 1, "model hashes match the chain");
  await shot(page, "oem-models");

  // Sign out: the cookie is gone, pages send us to the login form again.
  await Promise.all([page.waitForURL("**/ui/login?reason=signed_out"), page.click("[data-test=logout]")]);
  check((await page.textContent("[data-test=notice]")).includes("signed out"), "signed-out notice");
  await page.goto(base + "/ui/suppliers");
  check(page.url().startsWith(base + "/ui/login"), "after sign-out pages need a login");
  await close(s);
  summary.roles.push("OEM");
}

async function auditor() {
  const s = await session("auditor");
  const { page } = s;
  // A V3 keystore: decrypted in the browser with its passphrase. A wrong one is refused first.
  await page.goto(base + "/ui/login");
  await page.setInputFiles("#keyfile", cfg.keys.auditor);
  await page.fill("#passphrase", "not-the-passphrase");
  await page.click("#key-submit");
  await page.waitForSelector("#status.error", { timeout: 20000 });
  check((await page.textContent("#status")).includes("Wrong passphrase"), "wrong passphrase refused");
  await loginWithKey(page, cfg.keys.auditor, cfg.keystorePassphrase, "/ui/records");
  check(new URL(page.url()).pathname === "/ui/records", "auditor lands on the records page");
  await timed(page, "auditor-records");
  check((await page.textContent("[data-test=who]")).includes("AUDITOR"), "header shows AUDITOR");
  check(await page.locator("[data-test=records-table] tbody tr").count() > 10, "auditor sees records");

  // Lookup: a malformed hash is explained, a real one opens the record with its verification.
  await page.fill("#q", "0x1234");
  await Promise.all([page.waitForLoadState("load"), page.click("form.lookup button")]);
  check(await page.locator("[data-test=lookup-problem]").count() === 1, "malformed hash explained");
  await page.fill("#q", cfg.recordOfOther);
  await Promise.all([page.waitForURL(`**/ui/records/${cfg.recordOfOther}`),
    page.click("form.lookup button")]);
  await timed(page, "auditor-record");
  check((await page.textContent("[data-test=verdict]")).includes("Verified"), "record verifies");
  const checks = await page.locator("[data-test=checks] li").count();
  check(checks >= 10, `every verification check listed (${checks})`);
  check(await page.locator("[data-test=checks] li.bad").count() === 0, "no failed check");
  const anchor = await page.textContent("[data-test=anchor]");
  check(/batch/.test(anchor) && /block/.test(anchor) && /transaction/.test(anchor), "anchor shown");
  const receipt = await page.request.get(base + `/ui/records/${cfg.recordOfOther}/receipt.json`);
  check(receipt.status() === 200 && (await receipt.json()).structHash === cfg.recordOfOther,
    "receipt downloads for offline verification");
  await shot(page, "auditor-record");
  await tablet(page, "auditor-record");

  await navTo(page, "ranking", "/ui/suppliers");
  await timed(page, "auditor-ranking");
  await page.goto(base + `/ui/suppliers/${cfg.otherSupplier}`);
  await timed(page, "auditor-supplier");
  check((await page.textContent("h1")).includes(cfg.otherSupplier), "auditor sees any supplier");
  await navTo(page, "incidents", "/ui/incidents");
  await timed(page, "auditor-incidents");
  await page.goto(base + `/ui/incidents/${cfg.incident}`);
  await timed(page, "auditor-incident");
  await navTo(page, "models", "/ui/models");
  await timed(page, "auditor-models");
  await shot(page, "auditor-models");
  await close(s);
  summary.roles.push("AUDITOR");
}

async function supplier() {
  const s = await session("supplier");
  const { page } = s;
  await loginWithKey(page, cfg.keys.supplier, null, "/ui/");
  check(new URL(page.url()).pathname === `/ui/suppliers/${cfg.supplier}`,
    "a supplier lands on its own page");
  await timed(page, "supplier-own");
  check(await page.locator('nav [data-nav="ranking"]').count() === 0, "no ranking in a supplier's menu");
  check(await page.locator("[data-test=waterfall] svg").count() === 1, "own waterfall");
  await shot(page, "supplier-own");
  await tablet(page, "supplier-own");

  // Role scoping, exactly as the API: another supplier's page and the ranking are forbidden.
  await goto(page, `/ui/suppliers/${cfg.otherSupplier}`, null, 403);
  check((await page.textContent("[data-test=error]")).includes("supplier sees only its own"),
    "403 explains the rule");
  await shot(page, "supplier-forbidden");
  await goto(page, "/ui/suppliers", null, 403);
  await goto(page, `/ui/records/${cfg.recordOfOther}`, null, 404);

  await navTo(page, "records", "/ui/records");
  await timed(page, "supplier-records");
  const subjects = await page.locator("[data-test=records-table] tbody td:nth-child(3)").allTextContents();
  check(subjects.length > 0 && subjects.every((x) => x === cfg.supplier), "only own records listed");
  await page.goto(base + `/ui/records/${cfg.recordOfSupplier}`);
  await timed(page, "supplier-record");
  check((await page.textContent("[data-test=verdict]")).includes("Verified"), "own record verifies");

  await navTo(page, "incidents", "/ui/incidents");
  await timed(page, "supplier-incidents");
  check(await page.locator(`[data-incident="${cfg.incident}"]`).count() === 1,
    "the incident involving its lots is visible");
  await page.goto(base + `/ui/incidents/${cfg.incident}`);
  await timed(page, "supplier-incident");
  await navTo(page, "models", "/ui/models");
  await timed(page, "supplier-models");
  check((await page.textContent("[data-test=run]")).includes("took part"), "own participation");
  await shot(page, "supplier-models");
  await close(s);
  summary.roles.push("SUPPLIER");
}

async function tokenLogin() {
  // For keys in a wallet or HSM: sign the challenge elsewhere (here: ethers in node), paste.
  const keyDoc = JSON.parse(fs.readFileSync(cfg.keys.supplier2, "utf8"));
  const wallet = new ethers.Wallet(keyDoc.private_key);
  const post = async (url, body) => {
    const res = await fetch(base + url, { method: "POST", body: JSON.stringify(body),
      headers: { "Content-Type": "application/json" } });
    check(res.ok, `${url}: HTTP ${res.status}`);
    return res.json();
  };
  const challenge = await post("/v1/auth/challenge", { address: wallet.address });
  const signature = await wallet.signMessage(challenge.message);
  const token = await post("/v1/auth/token", { address: wallet.address, nonce: challenge.nonce,
    signature });
  const s = await session("token");
  const { page } = s;
  await page.goto(base + "/ui/login");
  await page.click(".token-login summary");
  await page.fill("#token", "not-a-token-at-all-really");
  await page.click("#token-submit");
  await page.waitForSelector("#status.error");
  check((await page.textContent("#status")).includes("invalid_token"), "bad token refused");
  await page.fill("#token", token.accessToken);
  await Promise.all([page.waitForURL(`**/ui/suppliers/${cfg.otherSupplier}`),
    page.click("#token-submit")]);
  await timed(page, "token-supplier");
  await shot(page, "login-token-supplier");
  await page.goto(base + "/ui/login");
  check(await page.locator("[data-test=current]").count() === 1, "login page knows the session");
  await shot(page, "login-signed-in");
  await close(s);
  summary.roles.push("SUPPLIER (token)");
}

(async () => {
  const started = Date.now();
  try {
    await oem();
    await auditor();
    await supplier();
    await tokenLogin();
  } catch (err) {
    process.stderr.write(`${err.stack || err}\n`);
    process.stdout.write(JSON.stringify({ ...summary, error: String(err.message || err) }));
    process.exit(1);
  }
  summary.seconds = (Date.now() - started) / 1000;
  process.stdout.write(JSON.stringify(summary));
})();
