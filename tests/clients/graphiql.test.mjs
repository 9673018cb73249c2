// GraphiQL on /graphql, in a real browser with no internet: headless Chromium (playwright-core)
// may reach 127.0.0.1 and nothing else (every other request is aborted, and host names do not
// resolve), so the page works only if the server serves all of it. Through the UI, as a person
// would: a development token in the Headers pane, a query typed into the editor and run with
// the execute button, then a subscription whose snapshot and next change appear in the
// result pane (the headers go over the WebSocket as connectionParams).
//
// Chromium is Debian's (`apt-get install chromium`), or CHROMIUM=/path/to/chrome. Without it
// the file is skipped, except under CI (process.env.CI), where it fails.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { copyFileSync, existsSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { startServer, devToken, webhook, offlinePage } from "./support.mjs";

const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const MISSING = existsSync(CHROMIUM) ? null
  : `Chromium not found at ${CHROMIUM}: install it (apt-get install -y chromium) or set CHROMIUM`;
const skip = MISSING && !process.env.CI ? MISSING : false;

const STEP = 10_000; // ms any one step may take
const USER = "user_graphiql";

let server, browser, page, token;
const blocked = []; // every request the page tried to make off this machine
const problems = []; // page errors and console errors (a CSP violation is one)

/** The CodeMirror editor inside `selector` (GraphiQL 4 uses CodeMirror 5). */
const editor = (selector) => `${selector} .CodeMirror`;
const QUERY_EDITOR = editor(".graphiql-query-editor");
const HEADERS_EDITOR = editor(".graphiql-editor-tool .graphiql-editor:not(.hidden)");
const RESULT = editor(".result-window");

/** Replace an editor's text the way a person does: click, select all, type. */
async function typeInto(selector, text) {
  await page.click(selector);
  await page.keyboard.press("Control+A");
  await page.keyboard.press("Delete");
  // insertText types the text as one input event, so the editor's bracket auto-closing and
  // completion popups do not add characters.
  await page.keyboard.insertText(text);
  assert.equal(await page.$eval(selector, (element) => element.CodeMirror.getValue()), text);
}

/** Type a one-operation document named `name` and run it with the execute button. GraphiQL
 * takes in each editor's text after a short pause (a 500 ms debounce): the active tab shows
 * the operation's name once it has (the Headers pane, typed before, has been taken by then). */
async function run(name, document) {
  await typeInto(QUERY_EDITOR, document);
  await page.waitForFunction(
    (title) => document.querySelector(".graphiql-tab-active")?.textContent === title,
    name, { timeout: STEP });
  await page.click("button.graphiql-execute-button:not([aria-haspopup])");
}

/** The result pane's text, parsed, once `predicate` holds for it. */
async function resultWhere(predicate, description) {
  const deadline = Date.now() + STEP;
  let last;
  while (Date.now() < deadline) {
    last = await page.$eval(RESULT, (element) => element.CodeMirror.getValue());
    try {
      const value = JSON.parse(last);
      if (predicate(value)) return value;
    } catch { /* empty or still streaming */ }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`result pane never showed ${description}; last: ${last}\nproblems: ${problems.join("\n")}`);
}

before(async () => {
  if (skip) return;
  if (MISSING) throw new Error(`${MISSING} (CI is set, so this is a failure, not a skip)`);
  [server, browser] = await Promise.all([
    startServer(),
    chromium.launch({
      executablePath: CHROMIUM,
      // No name resolves either: a CDN could not be reached even if a request slipped past.
      args: ["--no-sandbox", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"],
    }),
  ]);
  await webhook(server, "user.created", ["--user", USER, "--first-name", "Ada", "--last-name", "Lovelace"]);
  token = await devToken(server, USER);
  page = await offlinePage(browser, { viewport: { width: 1400, height: 900 }, step: STEP, blocked, problems });
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

test("GraphiQL renders from this server alone", { skip }, async () => {
  const response = await page.goto(server.url);
  assert.equal(response.status(), 200);
  assert.match(response.headers()["content-type"], /^text\/html/);
  await page.waitForSelector(".graphiql-container", { timeout: STEP });
  await page.waitForSelector(QUERY_EDITOR, { timeout: STEP });
  // The schema arrived by introspection: the documentation explorer lists the root types.
  await page.click('button[aria-label="Show Documentation Explorer"]');
  await page.waitForSelector(".graphiql-doc-explorer >> text=Subscription", { timeout: STEP });
  await page.click('button[aria-label="Hide Documentation Explorer"]');
  // The explorer plugin (vendored too) lists the query fields.
  await page.click('button[aria-label="Show GraphiQL Explorer"]');
  await page.waitForSelector(".graphiql-explorer-root >> text=getCurrentUser", { timeout: STEP });
  await page.click('button[aria-label="Hide GraphiQL Explorer"]');
  const screenshots = mkdtempSync(join(tmpdir(), "ddg-graphiql-"));
  await page.screenshot({ path: join(screenshots, "graphiql.png") });
  copyFileSync(join(screenshots, "graphiql.png"), "/tmp/graphiql.png");
  assert.deepEqual(blocked, [], `the page tried to leave this machine: ${blocked.join(", ")}`);
  assert.deepEqual(problems, []);
});

test("a query typed into the editor runs with the token from the Headers pane", { skip }, async () => {
  await typeInto(HEADERS_EDITOR, JSON.stringify({ Authorization: `Bearer ${token}` }));
  await run("Mine", "query Mine {\n  getCurrentUser { externalId name }\n}\n");
  const result = await resultWhere((value) => value.data?.getCurrentUser, "getCurrentUser");
  assert.deepEqual(result, { data: { getCurrentUser: { externalId: USER, name: "Ada Lovelace" } } });
  assert.deepEqual(blocked, []);
  assert.deepEqual(problems, []);
});

test("a subscription shows its snapshot, then each change, over the WebSocket", { skip }, async () => {
  await run("Live", "subscription Live {\n  currentUser { externalId name }\n}\n");
  const snapshot = await resultWhere((value) => value.data?.currentUser, "the snapshot");
  assert.deepEqual(snapshot, { data: { currentUser: { externalId: USER, name: "Ada Lovelace" } } });
  // Live: a Clerk webhook renames the user; the same pane shows the change.
  await webhook(server, "user.updated", ["--user", USER, "--first-name", "Grace", "--last-name", "Hopper"]);
  const change = await resultWhere((value) => value.data?.currentUser?.name === "Grace Hopper", "the change");
  assert.deepEqual(change, { data: { currentUser: { externalId: USER, name: "Grace Hopper" } } });
  await page.screenshot({ path: "/tmp/graphiql-subscription.png" });
  // Stop: the execute button turns into a stop button while the subscription runs.
  await page.click("button.graphiql-execute-button");
  assert.deepEqual(blocked, []);
  assert.deepEqual(problems, []);
});
