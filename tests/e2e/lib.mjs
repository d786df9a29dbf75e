// Helpers of the dsv4 serve end-to-end tests: start / stop a server, a tiny test runner, raw HTTP.
// Environment (set by run.sh): DSV4_BIN (the dsv4 binary), DSV4_MODEL (a tiny GGUF), E2E_TMP (a
// scratch directory).
import { spawn } from 'node:child_process';
import net from 'node:net';
import fs from 'node:fs';
import path from 'node:path';

export const BIN = process.env.DSV4_BIN;
export const MODEL = process.env.DSV4_MODEL;
export const TMP = process.env.E2E_TMP || fs.mkdtempSync('/tmp/dsv4-e2e-');
if (!BIN || !MODEL) {
  console.error('e2e: DSV4_BIN and DSV4_MODEL must be set (use tests/e2e/run.sh)');
  process.exit(2);
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Starts `dsv4 serve -m MODEL --port 0 ARGS...` and resolves once it prints its address.
export async function startServer(args = [], { env = {}, name = 'server' } = {}) {
  const full = ['serve', '-m', MODEL, '--port', '0', '--threads', '2', '--seed', '7', ...args];
  const proc = spawn(BIN, full, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  const logPath = path.join(TMP, `${name}-${proc.pid}.log`);
  const log = fs.createWriteStream(logPath);
  proc.stderr.on('data', (d) => {
    err += d;
    log.write(d);
  });
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name}: no "listening" line in 120 s; stderr:\n${err}`)), 120000);
    proc.stdout.on('data', (d) => {
      out += d;
      const m = /listening on (http:\/\/[^ ]+:\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`${name}: exited (${code ?? signal}) before listening; stderr:\n${err}`));
    });
  });
  return {
    url,
    proc,
    stderr: () => err,
    logPath,
    // SIGTERM (or `signal`), then the exit status; SIGKILL after `ms`.
    async stop(signal = 'SIGTERM', ms = 60000) {
      if (proc.exitCode !== null || proc.signalCode !== null) return exited;
      proc.kill(signal);
      const t = setTimeout(() => proc.kill('SIGKILL'), ms);
      const r = await exited;
      clearTimeout(t);
      return r;
    },
  };
}

// A minimal sequential test runner: test(name, fn); await run() exits non-zero on failures.
const tests = [];
export function test(name, fn) {
  tests.push({ name, fn });
}
export async function run(label) {
  let failed = 0;
  let ran = 0;
  const only = process.env.E2E_ONLY ? new RegExp(process.env.E2E_ONLY) : null;
  for (const t of tests) {
    if (only && !only.test(t.name)) continue;
    ran++;
    const t0 = Date.now();
    try {
      await t.fn();
      console.log(`  ok   ${t.name} (${Date.now() - t0} ms)`);
    } catch (e) {
      failed++;
      console.log(`  FAIL ${t.name}: ${e && e.stack ? e.stack : e}`);
    }
  }
  console.log(`${label}: ${ran - failed} passed, ${failed} failed`);
  return failed;
}

// fetch with a JSON body; returns {status, headers, text, json}.
export async function http(url, { method = 'POST', body, headers = {}, raw } = {}) {
  const init = { method, headers: { ...headers } };
  if (raw !== undefined) init.body = raw;
  else if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers['content-type'] = 'application/json';
  }
  const r = await fetch(url, init);
  const text = await r.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: r.status, headers: r.headers, text, json };
}

// One raw HTTP/1.1 exchange over a socket: sends `head` + `body` bytes and resolves with the
// status line's code and the response text, or rejects when the connection drops without one.
export function rawRequest(baseUrl, head, body = Buffer.alloc(0), timeoutMs = 60000) {
  const u = new URL(baseUrl);
  return new Promise((resolve, reject) => {
    const sock = net.connect(Number(u.port), u.hostname);
    const chunks = [];
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error('raw request timed out'));
    }, timeoutMs);
    sock.on('connect', () => {
      sock.write(head);
      if (body.length) sock.write(body);
    });
    sock.on('data', (d) => chunks.push(d));
    sock.on('error', () => {}); // EPIPE / ECONNRESET after the answer are fine; judged on 'close'
    sock.on('close', () => {
      clearTimeout(timer);
      const text = Buffer.concat(chunks).toString('latin1');
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(text);
      if (m) resolve({ status: Number(m[1]), text });
      else reject(new Error(`connection closed without an HTTP answer (${text.length} bytes)`));
    });
    // Ask the server to close after answering so that 'close' ends the exchange.
  });
}

// The value of a Prometheus sample ("name" or 'name{label="x"}') in /metrics text.
export function metric(text, sample) {
  for (const line of text.split('\n')) {
    if (line.startsWith(sample + ' ')) return Number(line.slice(sample.length + 1));
  }
  return undefined;
}

export async function metrics(base, headers = {}) {
  const r = await fetch(`${base}/metrics`, { headers });
  return r.text();
}

// Polls `fn` until it returns truthy (or throws after `ms`).
export async function eventually(fn, ms = 20000, what = 'condition') {
  const t0 = Date.now();
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await sleep(200);
  }
}

// A prompt of about `words` words (~1 token each for the tiny tokenizer's common words).
export function longText(words, seed = 1) {
  const vocab = ['alpha', 'bravo', 'charlie', 'delta', 'echo', 'foxtrot', 'golf', 'hotel', 'india', 'juliet',
    'kilo', 'lima', 'mike', 'november', 'oscar', 'papa', 'quebec', 'romeo', 'sierra', 'tango'];
  let x = seed;
  const out = [];
  for (let i = 0; i < words; i++) {
    x = (x * 1103515245 + 12345) % 2147483648;
    out.push(vocab[x % vocab.length]);
  }
  return out.join(' ');
}
