// The operator console (/console) in a real browser with no internet: headless Chromium
// (playwright-core) may reach 127.0.0.1 and nothing else, so every asset must come from the
// server, and any CSP violation (an inline script or style, a foreign request) shows up as a
// console error, which fails the test. Through the UI, as an operator would: each page, a
// search, a document, the live feed showing a mutation made elsewhere (over plain HTTP from
// Node) within a second, and ending a session from the console, which the feed shows too.
//
// Screenshots of each page go to tests/clients/artifacts/console/ (ignored by git), for a
// person to look at; CONSOLE_SCREENSHOT=path also writes the README's picture there.
//
// Chromium is Debian's (`apt-get install chromium`), or CHROMIUM=/path/to/chrome. Without it
// the file is skipped, except under CI (process.env.CI), where it fails.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { startServer, devToken, webhook, postGraphQL, bearer, offlinePage } from "./support.mjs";

const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const MISSING = existsSync(CHROMIUM) ? null
  : `Chromium not found at ${CHROMIUM}: install it (apt-get install -y chromium) or set CHROMIUM`;
const skip = MISSING && !process.env.CI ? MISSING : false;

const STEP = 10_000; // ms any one step may take
const LIVE_WITHIN = 1000; // ms from a mutation's answer to its row in the feed
const USER = "user_console";
const EMAIL = "grace@example.com";
const ARTIFACTS = new URL("./artifacts/console/", import.meta.url).pathname;
const PAGES = [
  ["/console/", "Health", "health"],
  ["/console/tables/users", "Users", "users"],
  ["/console/tables/sessions", "Sessions", "sessions"],
  ["/console/tables/payments", "Payment attempts", "payments"],
  ["/console/tables/subscriptions", "Billing subscriptions", "subscriptions"],
  ["/console/tables/webhooks", "Webhook deliveries", "webhooks"],
  ["/console/events", "Live events", "events"],
];
const CREATE_SESSION = "mutation($id: String!) { createSession(sessionId: $id) { sessionId } }";

let server, browser, page, token;
const blocked = []; // every request the page tried to make off this machine
const problems = []; // page errors and console errors (a CSP violation is one)

async function shoot(name) {
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`) });
}

before(async () => {
  if (skip) return;
  if (MISSING) throw new Error(`${MISSING} (CI is set, so this is a failure, not a skip)`);
  mkdirSync(ARTIFACTS, { recursive: true });
  [server, browser] = await Promise.all([
    startServer(),
    chromium.launch({
      executablePath: CHROMIUM,
      args: ["--no-sandbox", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"],
    }),
  ]);
  await webhook(server, "user.created", ["--user", USER, "--first-name", "Grace", "--email", EMAIL]);
  token = await devToken(server, USER);
  for (const id of ["sess_console_1", "sess_console_2"]) {
    const created = await postGraphQL(server, CREATE_SESSION, { id }, bearer(token));
    assert.equal(created.data?.createSession?.sessionId, id, JSON.stringify(created));
  }
  page = await offlinePage(browser, { viewport: { width: 1280, height: 720 }, step: STEP, blocked, problems });
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

test("every page renders from this server alone, under its strict CSP", { skip }, async () => {
  for (const [path, heading, name] of PAGES) {
    const response = await page.goto(`${server.base}${path}`);
    assert.equal(response.status(), 200, path);
    assert.match(response.headers()["content-security-policy"], /frame-ancestors 'none'/);
    assert.equal(response.headers()["x-frame-options"], "DENY");
    await page.waitForSelector(`h1 >> text=${heading}`);
    await shoot(name);
  }
  // htmx loaded and refreshes the health panel by itself.
  await page.goto(`${server.base}/console/`);
  await page.waitForFunction(() => window.htmx !== undefined);
  const refreshed = page.waitForResponse((r) => r.url().endsWith("/console/health") && r.status() === 200,
    { timeout: 8000 });
  await refreshed;
  assert.match(await page.textContent("#health"), /Database\s*up/);
  assert.deepEqual(blocked, [], `the page tried to leave this machine: ${blocked.join(", ")}`);
  assert.deepEqual(problems, []);
});

test("a search finds a user by email, and its document shows as JSON", { skip }, async () => {
  await page.goto(`${server.base}/console/tables/users`);
  await page.selectOption("select[name=by]", "email");
  await page.fill("input[name=q]", EMAIL);
  await page.click("form.search button");
  // htmx swapped the rows in place and put the search in the address bar.
  await page.waitForFunction(() => location.search.includes("by=email"));
  const link = page.locator(`#rows a >> text=${USER}`);
  await link.waitFor();
  assert.equal(await page.locator("#rows tbody tr").count(), 1);
  await shoot("users-search");
  await link.click();
  await page.waitForSelector("pre#document");
  const doc = JSON.parse(await page.textContent("pre#document"));
  assert.equal(doc.externalId, USER);
  assert.equal(doc.email, EMAIL);
  await shoot("user-document");
  assert.deepEqual(problems, []);
});

/** The feed row for `type` about `sessionId`, once it shows. */
async function feedRow(type, sessionId) {
  const row = page.locator(`#feed tbody tr[data-type="${type}"]`, { hasText: sessionId });
  await row.first().waitFor({ timeout: STEP });
  return row.first();
}

test("the live feed shows a mutation made elsewhere within a second", { skip }, async () => {
  await page.goto(`${server.base}/console/events`);
  await page.waitForSelector("#feed-status >> text=live");
  const sent = Date.now();
  const created = await postGraphQL(server, CREATE_SESSION, { id: "sess_live" }, bearer(token));
  assert.equal(created.data?.createSession?.sessionId, "sess_live");
  const row = await feedRow("session.created", "sess_live");
  const elapsed = Date.now() - sent;
  assert.ok(elapsed < LIVE_WITHIN, `the change took ${elapsed} ms to show`);
  const cells = await row.locator("td").allTextContents();
  assert.equal(cells[1], "session.created");
  assert.equal(cells[2], USER);
  assert.equal(cells[4], "1"); // version
  assert.equal(cells[5], "graphql"); // source
  // A Clerk webhook (another process: the CLI signs and posts it) shows as well.
  await webhook(server, "user.updated", ["--user", USER, "--first-name", "Grace", "--last-name", "Hopper", "--email", EMAIL]);
  const updated = page.locator('#feed tbody tr[data-type="user.updated"]').first();
  await updated.waitFor();
  assert.equal((await updated.locator("td").allTextContents())[5], "webhook");
  await shoot("events");
  assert.deepEqual(problems, []);
});

test("the feed filters by user and type", { skip }, async () => {
  await page.goto(`${server.base}/console/events`);
  await page.fill("input[name=user]", USER);
  await page.fill("input[name=type]", "session.ended");
  await page.click("form.search button");
  await page.waitForSelector("#feed-status >> text=live");
  assert.match(page.url(), /user=user_console&type=session.ended/);
  const other = await devToken(server, "user_elsewhere");
  await postGraphQL(server, CREATE_SESSION, { id: "sess_elsewhere" }, bearer(other));
  await postGraphQL(server, "mutation($id: String!) { endSession(sessionId: $id) { active } }", { id: "sess_elsewhere" }, bearer(other));
  await postGraphQL(server, "mutation($id: String!) { endSession(sessionId: $id) { active } }", { id: "sess_console_2" }, bearer(token));
  await feedRow("session.ended", "sess_console_2");
  assert.equal(await page.locator("#feed tbody tr").count(), 1);
  assert.deepEqual(problems, []);
});

test("ending a session from the console publishes it like the API", { skip }, async () => {
  const feed = await browser.newPage();
  await feed.goto(`${server.base}/console/events?type=session.ended`);
  await feed.waitForSelector("#feed-status >> text=live");
  await page.goto(`${server.base}/console/tables/sessions/doc?key=sess_console_1`);
  await page.click("#end-session button");
  await page.waitForSelector("pre#document");
  const doc = JSON.parse(await page.textContent("pre#document"));
  assert.equal(doc.active, false);
  assert.equal(doc.version, 2);
  assert.equal(await page.locator("#end-session").count(), 0);
  const row = feed.locator('#feed tbody tr[data-type="session.ended"]', { hasText: "sess_console_1" });
  await row.waitFor({ timeout: STEP });
  assert.equal((await row.locator("td").allTextContents())[5], "console");
  await feed.close();
  // The webhook log lists the deliveries the CLI made, applied.
  await page.goto(`${server.base}/console/tables/webhooks`);
  await page.waitForSelector("#glance >> text=Refused among the last");
  assert.match(await page.textContent("#rows"), /user\.updated[\s\S]*applied/);
  await shoot("webhooks-after");
  if (process.env.CONSOLE_SCREENSHOT) {
    await page.goto(`${server.base}/console/events`);
    await page.waitForSelector("#feed-status >> text=live");
    for (const id of ["sess_a1", "sess_a2"]) {
      await postGraphQL(server, CREATE_SESSION, { id }, bearer(token));
    }
    await postGraphQL(server, "mutation($id: String!) { endSession(sessionId: $id) { active } }", { id: "sess_a1" }, bearer(token));
    await feedRow("session.ended", "sess_a1");
    await page.waitForTimeout(1200); // the new rows' highlight fades
    await page.setViewportSize({ width: 1280, height: 360 });
    await page.screenshot({ path: process.env.CONSOLE_SCREENSHOT });
  }
  assert.deepEqual(blocked, []);
  assert.deepEqual(problems, []);
});
