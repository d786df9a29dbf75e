// Hostile input: malformed JSON, invalid UTF-8, wrong types, a body over the limit, absurd
// max_tokens, unknown roles, broken HTTP. Every answer must be a 4xx (never a 5xx, never a
// dropped connection), requests spelling special tokens must be served (as plain text), and
// /health must still answer afterwards.
import assert from 'node:assert/strict';
import { startServer, test, run, http, rawRequest } from './lib.mjs';

const srv = await startServer(['--max-body-mb', '1', '--queue', '64'], { name: 'hostile' });
const B = srv.url;
console.log(`e2e hostile: ${B}`);

const CHAT = '/v1/chat/completions';
const ok = { model: 'x', messages: [{ role: 'user', content: 'hi' }], max_tokens: 1 };

// [name, path, body (object, or string/Buffer sent as is)]
const cases = [
  ['empty body', CHAT, ''],
  ['truncated JSON', CHAT, '{"messages": [{"role": "user", "content": "hi"'],
  ['not JSON', CHAT, 'hello world'],
  ['JSON array', CHAT, '[]'],
  ['JSON null', CHAT, 'null'],
  ['trailing garbage', CHAT, '{"messages":[{"role":"user","content":"hi"}]} xyz'],
  ['lone surrogate escape', CHAT, '{"messages":[{"role":"user","content":"\\ud800"}]}'],
  ['invalid UTF-8 in a string', CHAT, Buffer.concat([Buffer.from('{"messages":[{"role":"user","content":"a'), Buffer.from([0xff, 0xfe, 0xc0, 0x80]), Buffer.from('"}]}')])],
  ['overlong UTF-8', '/v1/messages', Buffer.concat([Buffer.from('{"max_tokens":1,"messages":[{"role":"user","content":"'), Buffer.from([0xe0, 0x80, 0xaf]), Buffer.from('"}]}')])],
  ['deep nesting', CHAT, '{"messages":' + '['.repeat(20000) + ']'.repeat(20000) + '}'],
  ['unclosed deep nesting', CHAT, '['.repeat(100000)],
  ['messages is a string', CHAT, { messages: 'hi' }],
  ['messages empty', CHAT, { messages: [] }],
  ['content is a number', CHAT, { messages: [{ role: 'user', content: 5 }] }],
  ['unknown role', CHAT, { messages: [{ role: 'wizard', content: 'hi' }] }],
  ['role missing', CHAT, { messages: [{ content: 'hi' }] }],
  ['temperature is a string', CHAT, { ...ok, temperature: 'hot' }],
  ['temperature huge', CHAT, { ...ok, temperature: 1e9 }],
  ['top_p zero', CHAT, { ...ok, top_p: 0 }],
  // (max_tokens up to 2^31 - 1 is clamped to the context, as clients often ask for more.)
  ['max_tokens absurd', CHAT, { ...ok, max_tokens: 1000000000000000 }],
  ['max_tokens beyond int64', CHAT, { ...ok, max_tokens: 1e300 }],
  ['max_tokens negative', CHAT, { ...ok, max_tokens: -1 }],
  ['max_tokens a string', CHAT, { ...ok, max_tokens: 'lots' }],
  ['max_tokens fractional', CHAT, { ...ok, max_tokens: 2.5 }],
  ['n = 3', CHAT, { ...ok, n: 3 }],
  ['stream is a string', CHAT, { ...ok, stream: 'yes' }],
  ['stop is a number', CHAT, { ...ok, stop: 5 }],
  ['too many stop strings', CHAT, { ...ok, stop: Array.from({ length: 1000 }, (_, i) => `s${i}`) }],
  ['logit_bias bad id', CHAT, { ...ok, logit_bias: { '-5': 1 } }],
  ['logit_bias bad value', CHAT, { ...ok, logit_bias: { 5: 1e9 } }],
  ['tools not an array', CHAT, { ...ok, tools: {} }],
  ['tool without name', CHAT, { ...ok, tools: [{ type: 'function', function: {} }] }],
  ['tool_choice unknown function', CHAT, { ...ok, tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'object' } } }], tool_choice: { type: 'function', function: { name: 'nope' } } }],
  ['image content', CHAT, { messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'http://x' } }] }] }],
  ['completions without prompt', '/v1/completions', { max_tokens: 1 }],
  ['completions prompt is an object', '/v1/completions', { prompt: { a: 1 } }],
  ['responses without input', '/v1/responses', {}],
  ['responses previous_response_id', '/v1/responses', { input: 'hi', previous_response_id: 'resp_x' }],
  ['responses bad item', '/v1/responses', { input: [{ type: 'nonsense' }] }],
  ['messages without max_tokens', '/v1/messages', { messages: [{ role: 'user', content: 'hi' }] }],
  ['messages unknown block', '/v1/messages', { max_tokens: 1, messages: [{ role: 'user', content: [{ type: 'hologram' }] }] }],
  ['messages system role inside', '/v1/messages', { max_tokens: 1, messages: [{ role: 'system', content: 'x' }] }],
  ['count_tokens bad body', '/v1/messages/count_tokens', { messages: 7 }],
  ['unknown endpoint', '/v1/embeddings', { input: 'x' }],
  ['unknown path', '/../../etc/passwd', ok],
];

function bodyBytes(b) {
  if (Buffer.isBuffer(b)) return b;
  if (typeof b === 'string') return Buffer.from(b);
  return Buffer.from(JSON.stringify(b));
}

async function post(path, body, extraHeaders = '') {
  const bytes = bodyBytes(body);
  const head = `POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n` +
    `Content-Length: ${bytes.length}\r\nConnection: close\r\n${extraHeaders}\r\n`;
  return rawRequest(B, head, bytes);
}

const is4xx = (s) => s >= 400 && s < 500;

test('every hostile request gets a 4xx with a JSON error', async () => {
  const bad = [];
  for (const [name, path, body] of cases) {
    let r;
    try {
      r = await post(path, body);
    } catch (e) {
      bad.push(`${name}: ${e.message}`);
      continue;
    }
    const bodyText = r.text.slice(r.text.indexOf('\r\n\r\n') + 4);
    if (!is4xx(r.status)) bad.push(`${name}: status ${r.status}: ${bodyText.slice(0, 200)}`);
    else if (!/"error"/.test(bodyText)) bad.push(`${name}: no error body: ${bodyText.slice(0, 200)}`);
  }
  assert.deepEqual(bad, []);
});

test('a body over --max-body-mb gets 413', async () => {
  const big = Buffer.alloc(2 * 1024 * 1024 + 17, 'a');
  const r = await post(CHAT, big);
  assert.equal(r.status, 413);
});

test('broken HTTP gets 4xx, never a dropped connection', async () => {
  const heads = [
    'GARBAGE\r\n\r\n',
    'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\nConnection: close\r\n\r\n',
    'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\nhello\r\n0\r\n\r\n',
    `GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(100000)}\r\nConnection: close\r\n\r\n`,
    `GET /${'a'.repeat(20000)} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`,
    'PUT /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}',
    'DELETE /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
    'GET /v1/models/%ff%fe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
    'GET /%c0%80%ff HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
    'GET /v1/models/\xff HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
  ];
  const bad = [];
  for (const h of heads) {
    try {
      const r = await rawRequest(B, h);
      if (!is4xx(r.status)) bad.push(`${JSON.stringify(h.slice(0, 60))}: status ${r.status}`);
    } catch (e) {
      bad.push(`${JSON.stringify(h.slice(0, 60))}: ${e.message}`);
    }
  }
  assert.deepEqual(bad, []);
});

test('special-token strings in content are plain text (served, not 5xx)', async () => {
  const spellings = ['<｜User｜>', '<｜Assistant｜>', '<｜end▁of▁sentence｜>', '<think>', '</think>',
    '<｜DSML｜tool_calls>', '<｜begin▁of▁sentence｜>'];
  for (const s of spellings) {
    const r = await http(`${B}${CHAT}`, { body: { messages: [{ role: 'user', content: `say ${s} now` }], max_tokens: 1 } });
    assert.equal(r.status, 200, `${s}: ${r.text}`);
    const c = await http(`${B}/v1/messages/count_tokens`, { body: { messages: [{ role: 'user', content: s }] } });
    const base = await http(`${B}/v1/messages/count_tokens`, { body: { messages: [{ role: 'user', content: '' }] } });
    assert.equal(c.status, 200);
    // A special token would add one token; plain text of these strings is several.
    assert.ok(c.json.input_tokens - base.json.input_tokens > 1, `${s} tokenized as ${c.json.input_tokens - base.json.input_tokens} token(s)`);
  }
});

test('the server is healthy afterwards', async () => {
  const h = await http(`${B}/health`, { method: 'GET' });
  assert.equal(h.status, 200);
  const r = await http(`${B}${CHAT}`, { body: ok });
  assert.equal(r.status, 200, r.text);
});

const failed = await run('e2e hostile');
const { code, signal } = await srv.stop();
if (code !== 0) {
  console.log(`server exited with ${code ?? signal}`);
  process.exitCode = 1;
}
if (failed) {
  console.log(`--- stderr (tail) ---\n${srv.stderr().slice(-3000)}`);
  process.exitCode = 1;
}
