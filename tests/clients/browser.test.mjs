// A real browser: headless Chromium (driven by playwright-core) opens a page that loads
// graphql-ws's own browser build and subscribes with a development token in
// connectionParams. The page writes what it receives into its DOM and `window.results`;
// the test reads them back. Changes come from Node: a Clerk webhook and a mutation.
//
// As deployed, the page is on another origin than the API (another loopback port here), and
// the server names the page's origin in CORS_ALLOWED_ORIGINS. Browsers send `Origin` on the
// WebSocket handshake; an origin not named there is refused (cross-site WebSocket hijacking).
//
// Chromium is Debian's (`apt-get install chromium`), or CHROMIUM=/path/to/chrome. Without it
// the file is skipped, except under CI (process.env.CI), where it fails.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { createServer } from "node:http";
import { chromium } from "playwright-core";
import { startServer, devToken, webhook, postGraphQL, bearer, freePort } from "./support.mjs";

const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const MISSING = existsSync(CHROMIUM) ? null
  : `Chromium not found at ${CHROMIUM}: install it (apt-get install -y chromium) or set CHROMIUM`;
// Skipped only on a developer's machine; CI must run it.
const skip = MISSING && !process.env.CI ? MISSING : false;

const STEP = 5000; // ms any one message may take
const PAGE = readFileSync(new URL("./pages/subscribe.html", import.meta.url));
const GRAPHQL_WS = readFileSync(new URL("./node_modules/graphql-ws/umd/graphql-ws.min.js", import.meta.url));

const CURRENT_USER = "subscription { currentUser { externalId name email version } }";
const SESSION = `subscription($id: String!) {
  session(sessionId: $id) { sessionId userId active metadata version }
}`;

let server, pages, browser, token;

/** The page's own origin: another loopback port, serving only the page and graphql-ws.
 * `origin` is the allowed one; `otherOrigin` (localhost, same port) is another origin. */
async function servePages(port) {
  const http = createServer((request, response) => {
    const path = new URL(request.url, "http://localhost").pathname;
    if (path === "/") {
      response.writeHead(200, { "content-type": "text/html; charset=utf-8" }).end(PAGE);
    } else if (path === "/graphql-ws.js") {
      response.writeHead(200, { "content-type": "text/javascript" }).end(GRAPHQL_WS);
    } else {
      response.writeHead(404).end();
    }
  });
  await new Promise((resolve) => http.listen(port, "127.0.0.1", resolve));
  return { http, origin: `http://127.0.0.1:${port}`, otherOrigin: `http://localhost:${port}` };
}

/** A fresh page subscribed to `query` with `authToken`; resolves once the page has run. */
async function subscribePage(query, variables = {}, authToken = token, origin = pages.origin) {
  const page = await browser.newPage();
  const problems = [];
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("console", (message) => {
    if (message.type() === "error") problems.push(`console: ${message.text()}`);
  });
  const search = new URLSearchParams({
    ws: server.wsUrl, token: authToken, query, variables: JSON.stringify(variables),
  });
  await page.goto(`${origin}/?${search}`);
  page.problems = problems;
  return { page, problems };
}

/** The page's n-th result (1-based), once it arrived; else what the page saw go wrong. */
async function result(page, n) {
  try {
    await page.waitForFunction((count) => window.results.length >= count, n, { timeout: STEP });
  } catch (error) {
    const seen = await page.evaluate(() => window.results);
    throw new Error(`page has ${seen.length} of ${n} results: ${JSON.stringify(seen)}; `
      + `browser said: ${JSON.stringify(page.problems)}`, { cause: error });
  }
  return page.evaluate((index) => window.results[index], n - 1);
}

/** The data of the page's n-th result, which must be a result (not an error). */
async function data(page, n) {
  const received = await result(page, n);
  assert.equal(received.kind, "next",
    `result ${n} is ${JSON.stringify(received)}; browser said: ${JSON.stringify(page.problems)}`);
  return received.data;
}

before(async () => {
  if (skip) return;
  if (MISSING) throw new Error(`${MISSING} (CI is set, so this is a failure, not a skip)`);
  const pagePort = await freePort();
  [server, pages, browser] = await Promise.all([
    startServer({ env: { CORS_ALLOWED_ORIGINS: `http://127.0.0.1:${pagePort}` } }),
    servePages(pagePort),
    chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] }),
  ]);
  await webhook(server, "user.created", ["--user", "user_browser", "--first-name", "Ada", "--last-name", "Lovelace", "--email", "ada@example.com"]);
  token = await devToken(server, "user_browser");
});

after(async () => {
  await browser?.close();
  pages?.http.close();
  await server?.stop();
});

test("currentUser in Chromium: the snapshot, then the change a Clerk webhook makes", { skip }, async () => {
  const { page, problems } = await subscribePage(CURRENT_USER);
  const first = await data(page, 1);
  assert.deepEqual(first, {
    currentUser: { externalId: "user_browser", name: "Ada Lovelace", email: "ada@example.com", version: 1 },
  });
  // The browser negotiated graphql-ws's protocol (a text protocol: it would refuse binary frames).
  assert.equal(await page.textContent("#protocol"), "graphql-transport-ws");

  await webhook(server, "user.updated", ["--user", "user_browser", "--first-name", "Grace", "--last-name", "Hopper"]);
  const second = await data(page, 2);
  assert.equal(second.currentUser.name, "Grace Hopper");
  assert.equal(second.currentUser.version, 2);
  // What the page rendered is what it received, in order.
  const rendered = await page.$$eval("#log li", (items) => items.map((item) => JSON.parse(item.textContent)));
  assert.deepEqual(rendered, [{ kind: "next", data: first }, { kind: "next", data: second }]);
  assert.deepEqual(problems, []);
  await page.close();
});

test("session in Chromium: the snapshot, then a mutation's merged metadata", { skip }, async () => {
  const created = await postGraphQL(server,
    `mutation { createSession(sessionId: "sess-browser", metadata: {doc: "a.pdf", step: 0}) { version } }`,
    {}, bearer(token));
  assert.deepEqual(created, { data: { createSession: { version: 1 } } });

  const { page, problems } = await subscribePage(SESSION, { id: "sess-browser" });
  const first = await data(page, 1);
  assert.deepEqual(first.session, {
    sessionId: "sess-browser", userId: "user_browser", active: true,
    metadata: { doc: "a.pdf", step: 0 }, version: 1,
  });

  for (const step of [1, 2]) {
    const updated = await postGraphQL(server,
      `mutation($m: JSON) { updateSession(sessionId: "sess-browser", metadata: $m) { version } }`,
      { m: { step } }, bearer(token));
    assert.equal(updated.data?.updateSession?.version, step + 1, JSON.stringify(updated));
  }
  const changes = [await data(page, 2), await data(page, 3)];
  assert.deepEqual(changes.map((change) => [change.session.version, change.session.metadata]), [
    [2, { doc: "a.pdf", step: 1 }],
    [3, { doc: "a.pdf", step: 2 }],
  ]);
  assert.deepEqual(problems, []);
  await page.close();
});

test("a token the server does not accept: the browser sees the connection closed with 4403", { skip }, async () => {
  const { page } = await subscribePage(CURRENT_USER, {}, "not-a-token");
  const refused = await result(page, 1);
  assert.deepEqual(refused, { kind: "error", code: 4403, reason: "Forbidden" });
  assert.deepEqual(await page.evaluate(() => window.closeEvent), { code: 4403, reason: "Forbidden" });
  await page.close();
});

test("a page on an origin the server does not allow cannot open the WebSocket", { skip }, async () => {
  const { page, problems } = await subscribePage(CURRENT_USER, {}, token, pages.otherOrigin);
  const refused = await result(page, 1);
  // The handshake is answered 403: the page gets no close code, only a failed connection.
  assert.deepEqual(refused, { kind: "error", event: "error" });
  assert.equal(await page.textContent("#protocol"), "(connecting)");
  assert.ok(problems.some((p) => p.includes("Unexpected response code: 403")), JSON.stringify(problems));
  await page.close();
});
