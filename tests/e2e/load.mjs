// Load: >= 32 concurrent clients send >= 500 short requests (all four dialects, streamed and
// not, max_tokens 2) to one server. Zero failures are allowed. Prints the RSS before and after a
// warm-up and at the end (numbers for the reader, not assertions), and the request rate.
// E2E_LOAD_CLIENTS / E2E_LOAD_REQUESTS override the defaults (32 / 500).
import assert from 'node:assert/strict';
import { startServer, test, run, metrics, metric } from './lib.mjs';

const CLIENTS = Number(process.env.E2E_LOAD_CLIENTS || 32);
const REQUESTS = Number(process.env.E2E_LOAD_REQUESTS || 500);
const srv = await startServer(['--queue', String(CLIENTS * 2), '--max-sessions', '8'], { name: 'load' });
const B = srv.url;
console.log(`e2e load: ${B}, ${CLIENTS} clients, ${REQUESTS} requests`);

function request(i) {
  const user = `question number ${i % 50}`;
  switch (i % 6) {
    case 0: return ['/v1/chat/completions', { messages: [{ role: 'user', content: user }], max_tokens: 2 }];
    case 1: return ['/v1/chat/completions', { messages: [{ role: 'user', content: user }], max_tokens: 2, stream: true, stream_options: { include_usage: true } }];
    case 2: return ['/v1/completions', { prompt: user, max_tokens: 2 }];
    case 3: return ['/v1/responses', { input: user, max_output_tokens: 2, stream: i % 12 === 3 }];
    case 4: return ['/v1/messages', { messages: [{ role: 'user', content: user }], max_tokens: 2 }];
    default: return ['/v1/messages', { messages: [{ role: 'user', content: user }], max_tokens: 2, stream: true }];
  }
}

async function one(i) {
  const [path, body] = request(i);
  const r = await fetch(`${B}${path}`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'm', ...body }),
  });
  const text = await r.text();
  if (r.status !== 200) throw new Error(`${path} -> ${r.status}: ${text.slice(0, 200)}`);
  if (body.stream) {
    if (!/data: /.test(text) || /^event: error$|^data: \{"error"|"type":"error"|response\.failed/m.test(text)) throw new Error(`${path} stream: ${text.slice(-300)}`);
  } else {
    JSON.parse(text);
  }
}

async function blast(n, clients) {
  let next = 0;
  const failures = [];
  const t0 = Date.now();
  await Promise.all(Array.from({ length: clients }, async () => {
    while (next < n) {
      const i = next++;
      try {
        await one(i);
      } catch (e) {
        failures.push(`#${i}: ${e.message}`);
      }
    }
  }));
  return { failures, seconds: (Date.now() - t0) / 1000 };
}

const rss = async () => metric(await metrics(B), 'process_resident_memory_bytes') / 1048576;

test(`${REQUESTS} requests from ${CLIENTS} concurrent clients, zero failures`, async () => {
  const before = await rss();
  const warm = await blast(Math.min(50, REQUESTS), CLIENTS);
  const afterWarm = await rss();
  const main = await blast(REQUESTS, CLIENTS);
  const after = await rss();
  const m = await metrics(B);
  console.log(`    RSS: ${before.toFixed(1)} MiB at start, ${afterWarm.toFixed(1)} MiB after warm-up, ${after.toFixed(1)} MiB after the run`);
  console.log(`    ${REQUESTS} requests in ${main.seconds.toFixed(1)} s (${(REQUESTS / main.seconds).toFixed(1)} req/s); ` +
    `cache hits: memory ${metric(m, 'dsv4_cache_hits_total{kind="memory"}')}, miss ${metric(m, 'dsv4_cache_hits_total{kind="miss"}')}; ` +
    `live sessions ${metric(m, 'dsv4_live_sessions')}`);
  assert.deepEqual([...warm.failures, ...main.failures].slice(0, 20), []);
  assert.equal(metric(m, 'dsv4_queue_depth'), 0);
  assert.equal(metric(m, 'dsv4_http_responses_total{code="5xx"}'), 0);
});

const failed = await run('e2e load');
const { code } = await srv.stop();
if (code !== 0 || failed) {
  console.log(`server exit ${code}; stderr (tail):\n${srv.stderr().slice(-3000)}`);
  process.exitCode = 1;
}
