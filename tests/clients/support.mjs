// Shared harness for the client-conformance suite: a real `datadiver-graph serve` process,
// development tokens and signed Clerk webhooks from the project's own CLI, and a queue that
// turns any client's callbacks into awaitable messages. Nothing here speaks GraphQL itself:
// every test talks to the server through the library it is testing.
import { spawn, execFile } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

/** The installed CLI (tests/test_clients_node.py passes the venv's). */
export const CLI = process.env.DATADIVER_GRAPH ?? "datadiver-graph";
export const SERVICE_KEY = "svc_conformance_key_0123456789";

export async function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Environment of a development server; MONGODB_URI from the caller (pytest's SecantusDB)
 * with a database of its own, else the embedded database under dataDir. */
function serverEnv(dataDir, database, extra) {
  const env = { ...process.env, DATA_DIR: dataDir, DATADIVER_ENV: "development",
    SERVICE_API_KEYS: SERVICE_KEY, LOG_LEVEL: "WARNING", ...extra };
  for (const key of ["CLERK_ISSUER", "CLERK_WEBHOOK_SECRET", "BROADCAST_URL"]) delete env[key];
  if (process.env.MONGODB_URI) env.MONGODB_DB = database;
  return env;
}

/**
 * Start `datadiver-graph serve` and wait for /readyz. `restart()` starts it again on the same
 * port, data directory and database (the reconnection scenario); `stop(signal)` resolves
 * with the exit code.
 */
export async function startServer({ port, dataDir, database, env = {} } = {}) {
  port ??= await freePort();
  dataDir ??= mkdtempSync(join(tmpdir(), "ddg-clients-"));
  database ??= `clients_${process.pid}_${port}`;
  const base = `http://127.0.0.1:${port}`;
  const server = {
    port, dataDir, database,
    url: `${base}/graphql`,
    wsUrl: `ws://127.0.0.1:${port}/graphql`,
    base,
    output: "",
    process: null,
    async start() {
      const child = spawn(CLI, ["serve", "--port", String(port)], {
        env: serverEnv(dataDir, database, env),
        stdio: ["ignore", "pipe", "pipe"],
      });
      child.stdout.on("data", (d) => { server.output += d; });
      child.stderr.on("data", (d) => { server.output += d; });
      server.process = child;
      const deadline = Date.now() + 30_000;
      while (Date.now() < deadline) {
        if (child.exitCode !== null) throw new Error(`serve exited ${child.exitCode}:\n${server.output}`);
        try {
          const response = await fetch(`${base}/readyz`);
          if (response.status === 200) return server;
        } catch { /* not listening yet */ }
        await sleep(100);
      }
      throw new Error(`serve not ready within 30 s:\n${server.output}`);
    },
    async stop(signal = "SIGTERM") {
      const child = server.process;
      if (!child || child.exitCode !== null) return child?.exitCode;
      const exited = new Promise((resolve) => child.once("exit", (code) => resolve(code)));
      child.kill(signal);
      return exited;
    },
    async restart() {
      await server.stop();
      return server.start();
    },
  };
  return server.start();
}

function cliEnv(server) {
  return serverEnv(server.dataDir, server.database, {});
}

/** A development session token for `userId`, signed with the server's dev key. */
export async function devToken(server, userId, ttl = 3600) {
  const { stdout } = await run(CLI, ["dev-token", "--user", userId, "--ttl", String(ttl)], { env: cliEnv(server) });
  return stdout.trim();
}

/** A Clerk event signed as Svix signs it, posted to the server's webhook endpoint. */
export async function webhook(server, event, args = []) {
  const { stdout } = await run(CLI, ["dev-webhook", event, "--url", server.base, ...args], { env: cliEnv(server) });
  return stdout.trim();
}

/** A plain GraphQL POST (for setup steps only; the tests' operations go through the library). */
export async function postGraphQL(server, query, variables = {}, headers = {}) {
  const response = await fetch(server.url, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify({ query, variables }),
  });
  return response.json();
}

export const bearer = (token) => ({ authorization: `Bearer ${token}` });
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Collects what a client's sink or observer receives; `next()` awaits the next item.
 * `sink` fits graphql-ws (`next/error/complete`), `observer` fits Apollo/urql/zen observables.
 */
export class Inbox {
  constructor(name = "inbox") {
    this.name = name;
    this.items = [];
    this.waiters = [];
    this.errors = [];
    this.completed = false;
  }
  push(item) {
    const waiter = this.waiters.shift();
    if (waiter) waiter.resolve(item); else this.items.push(item);
  }
  get sink() {
    return {
      next: (value) => this.push({ kind: "next", value }),
      error: (error) => { this.errors.push(error); this.push({ kind: "error", error }); },
      complete: () => { this.completed = true; this.push({ kind: "complete" }); },
    };
  }
  get observer() { return this.sink; }
  /** The next item; rejects after `ms`. */
  next(ms = 5000) {
    if (this.items.length) return Promise.resolve(this.items.shift());
    return new Promise((resolve, reject) => {
      const waiter = { resolve: (item) => { clearTimeout(timer); resolve(item); } };
      const timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(waiter), 1);
        reject(new Error(`${this.name}: nothing within ${ms} ms`));
      }, ms);
      this.waiters.push(waiter);
    });
  }
  /** The next result's value; fails on an error or completion. */
  async value(ms = 5000) {
    const item = await this.next(ms);
    if (item.kind !== "next") throw new Error(`${this.name}: expected a result, got ${item.kind}: ${item.error ?? ""}`);
    return item.value;
  }
}

/**
 * A page that may reach this machine only: every other request is aborted and recorded in
 * `blocked`; page errors and console errors (a CSP violation is one) go to `problems`.
 */
export async function offlinePage(browser, { viewport, step, blocked, problems }) {
  const context = await browser.newContext({ viewport });
  await context.route("**/*", (route) => {
    const url = new URL(route.request().url());
    if (url.hostname === "127.0.0.1") return route.continue();
    blocked.push(url.href);
    return route.abort("internetdisconnected");
  });
  const page = await context.newPage();
  page.setDefaultTimeout(step);
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("console", (message) => {
    if (message.type() === "error") problems.push(`console: ${message.text()}`);
  });
  return page;
}
