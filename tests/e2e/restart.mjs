// The disk KV cache survives a restart: a long prompt is served with --kv-disk-dir (snapshots at
// small aligned frontiers), the server stops on SIGTERM (exit 0), a new server on the same
// directory serves the same prompt plus a suffix from the disk snapshot: cached_tokens > 0 and
// a disk hit in /metrics.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import OpenAI from 'openai';
import { startServer, test, run, metrics, metric, TMP, longText } from './lib.mjs';

const dir = path.join(TMP, 'kv');
const ARGS = ['--kv-disk-dir', dir, '--kv-disk-min-tokens', '64', '--kv-disk-align', '128'];
const PROMPT = longText(140, 3); // ~6 tokens per word with the tiny tokenizer
let servers = [];

test('a long prompt is served from disk after a restart', async () => {
  const a = await startServer(ARGS, { name: 'restart-a' });
  servers.push(a);
  const ca = new OpenAI({ baseURL: `${a.url}/v1`, apiKey: 'x', maxRetries: 0, timeout: 600000 });
  const r1 = await ca.chat.completions.create({
    model: 'm', messages: [{ role: 'user', content: PROMPT }], max_tokens: 2, reasoning_effort: 'none',
  });
  assert.ok(r1.usage.prompt_tokens >= 600, `prompt has ${r1.usage.prompt_tokens} tokens`);
  assert.equal(r1.usage.prompt_tokens_details.cached_tokens, 0);
  const { code } = await a.stop('SIGTERM');
  assert.equal(code, 0, 'graceful stop exits 0');
  const files = fs.readdirSync(dir, { recursive: true });
  assert.ok(files.length > 0, 'snapshots written to --kv-disk-dir');

  const b = await startServer(ARGS, { name: 'restart-b' });
  servers.push(b);
  const cb = new OpenAI({ baseURL: `${b.url}/v1`, apiKey: 'x', maxRetries: 0, timeout: 600000 });
  const r2 = await cb.chat.completions.create({
    model: 'm', messages: [{ role: 'user', content: PROMPT + ' and one more question' }], max_tokens: 2,
    reasoning_effort: 'none',
  });
  const cached = r2.usage.prompt_tokens_details.cached_tokens;
  console.log(`    prompt ${r2.usage.prompt_tokens} tokens, ${cached} from the disk cache`);
  assert.ok(cached > 0, JSON.stringify(r2.usage));
  const m = await metrics(b.url);
  assert.ok(metric(m, 'dsv4_cache_hits_total{kind="disk"}') >= 1, m);
  assert.ok(metric(m, 'dsv4_disk_bytes') > 0);
  const { code: code2 } = await b.stop('SIGINT');
  assert.equal(code2, 0, 'SIGINT stops gracefully too');
});

const failed = await run('e2e restart');
for (const s of servers) await s.stop();
if (failed) {
  for (const s of servers) console.log(`--- ${s.url} stderr (tail) ---\n${s.stderr().slice(-3000)}`);
  process.exitCode = 1;
}
