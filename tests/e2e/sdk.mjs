// dsv4 serve under the official OpenAI and Anthropic SDKs: every endpoint, streamed and not,
// tool-call round trips with KV reuse, thinking controls, error shapes, cancellation by
// disconnect. Three servers on the tiny model:
//   main:     random weights (sampled text), API key required;
//   tools:    --scripted-output "reasoning...</think>" + a DSML get_weather(city=Paris) call;
//   long:     --scripted-output a long text (to cancel a stream in the middle), --queue 1.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { startServer, test, run, http, metrics, metric, eventually, TMP, sleep, longText } from './lib.mjs';

const KEY = 'e2e-secret-key';
const TOOL_SCRIPT =
  'reasoning...</think>\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name="get_weather">\n' +
  '<｜DSML｜parameter name="city" string="true">Paris</｜DSML｜parameter>\n' +
  '</｜DSML｜invoke>\n</｜DSML｜tool_calls>';
fs.writeFileSync(path.join(TMP, 'tool_script.txt'), TOOL_SCRIPT);
fs.writeFileSync(path.join(TMP, 'long_script.txt'), longText(3000, 5));

const main = await startServer(['--api-key', KEY], { name: 'main' });
const tools = await startServer(['--scripted-output', path.join(TMP, 'tool_script.txt'), '--cors', '*'], { name: 'tools' });
const long = await startServer(['--scripted-output', path.join(TMP, 'long_script.txt'), '--queue', '1'], { name: 'long' });
console.log(`e2e sdk: main ${main.url}, tools ${tools.url}, long ${long.url}`);

const AUTH = { authorization: `Bearer ${KEY}` };
const oai = new OpenAI({ baseURL: `${main.url}/v1`, apiKey: KEY, maxRetries: 0, timeout: 300000 });
const anth = new Anthropic({ baseURL: main.url, apiKey: KEY, maxRetries: 0, timeout: 300000 });
const toai = new OpenAI({ baseURL: `${tools.url}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 300000 });
const tanth = new Anthropic({ baseURL: tools.url, apiKey: 'unused', maxRetries: 0, timeout: 300000 });
const loai = new OpenAI({ baseURL: `${long.url}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 300000 });

let MODEL = 'tiny';
const USER = [{ role: 'user', content: 'Hello! Tell me something.' }];

function checkChatUsage(u, maxCompletion) {
  assert.ok(u, 'usage present');
  assert.ok(u.prompt_tokens > 0, 'prompt_tokens > 0');
  assert.ok(u.completion_tokens >= 1 && u.completion_tokens <= maxCompletion, `completion_tokens ${u.completion_tokens}`);
  assert.equal(u.total_tokens, u.prompt_tokens + u.completion_tokens);
}

// ------------------------------------------------------------------------------------------------
test('health and models', async () => {
  const h = await http(`${main.url}/health`, { method: 'GET' });
  assert.equal(h.status, 200);
  assert.deepEqual(h.json, { status: 'ok' });
  const list = [];
  for await (const m of oai.models.list()) list.push(m);
  assert.equal(list.length, 1);
  MODEL = list[0].id;
  assert.equal(list[0].object, 'model');
  const one = await oai.models.retrieve(MODEL);
  assert.equal(one.id, MODEL);
  await assert.rejects(oai.models.retrieve('no-such-model'), (e) => e.status === 404 && e instanceof OpenAI.NotFoundError);
});

test('chat completions, non-streamed', async () => {
  const r = await oai.chat.completions.create({ model: MODEL, messages: USER, max_tokens: 8 });
  assert.equal(r.object, 'chat.completion');
  assert.match(r.id, /^chatcmpl-/);
  assert.equal(r.choices.length, 1);
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.ok(['length', 'stop'].includes(r.choices[0].finish_reason), r.choices[0].finish_reason);
  checkChatUsage(r.usage, 8);
});

test('chat completions, streamed with include_usage', async () => {
  const s = await oai.chat.completions.create({
    model: MODEL, messages: USER, max_tokens: 6, stream: true, stream_options: { include_usage: true },
  });
  let chunks = 0, usage = null, finish = null, text = '';
  for await (const c of s) {
    chunks++;
    assert.equal(c.object, 'chat.completion.chunk');
    if (c.usage) usage = c.usage;
    for (const ch of c.choices) {
      if (ch.finish_reason) finish = ch.finish_reason;
      text += (ch.delta.content ?? '') + (ch.delta.reasoning_content ?? '');
    }
  }
  assert.ok(chunks >= 2, `chunks ${chunks}`);
  assert.ok(['length', 'stop'].includes(finish), `finish ${finish}`);
  checkChatUsage(usage, 6);
  assert.ok(text.length > 0 || usage.completion_tokens > 0);
});

test('completions, non-streamed and streamed', async () => {
  const r = await oai.completions.create({ model: MODEL, prompt: 'Once upon a time', max_tokens: 6 });
  assert.equal(r.object, 'text_completion');
  assert.equal(typeof r.choices[0].text, 'string');
  checkChatUsage(r.usage, 6);
  const s = await oai.completions.create({
    model: MODEL, prompt: 'Once upon a time', max_tokens: 5, stream: true, stream_options: { include_usage: true },
  });
  let usage = null, finish = null, n = 0;
  for await (const c of s) {
    n++;
    if (c.usage) usage = c.usage;
    for (const ch of c.choices ?? []) if (ch.finish_reason) finish = ch.finish_reason;
  }
  assert.ok(n >= 1);
  assert.ok(['length', 'stop'].includes(finish), `finish ${finish}`);
  checkChatUsage(usage, 5);
  // The same prompt again reuses the KV of the first.
  const again = await oai.completions.create({ model: MODEL, prompt: 'Once upon a time', max_tokens: 2 });
  assert.ok(again.usage.prompt_tokens_details?.cached_tokens > 0, JSON.stringify(again.usage));
});

test('responses, non-streamed and streamed', async () => {
  const r = await oai.responses.create({ model: MODEL, input: 'Hello there', max_output_tokens: 8 });
  assert.equal(r.object, 'response');
  assert.match(r.id, /^resp_/);
  assert.ok(['completed', 'incomplete'].includes(r.status), r.status);
  assert.ok(r.usage.input_tokens > 0 && r.usage.output_tokens >= 1 && r.usage.output_tokens <= 8);
  const s = await oai.responses.create({ model: MODEL, input: 'Hello there', max_output_tokens: 6, stream: true });
  const types = [];
  let terminal = null;
  for await (const ev of s) {
    types.push(ev.type);
    if (['response.completed', 'response.incomplete', 'response.failed'].includes(ev.type)) terminal = ev;
  }
  assert.equal(types[0], 'response.created');
  assert.ok(terminal && terminal.type !== 'response.failed', `terminal ${terminal?.type}`);
  assert.ok(terminal.response.usage.output_tokens >= 1);
  // The SDK's stream helper on a turn that completes (the scripted tool server).
  const st = toai.responses.stream({ model: MODEL, input: 'Weather in Paris?', tools: RESPONSES_TOOLS });
  const fin = await st.finalResponse();
  assert.equal(fin.status, 'completed');
  assert.ok(fin.output.some((o) => o.type === 'function_call' && o.name === 'get_weather'));
});

test('messages, non-streamed and streamed (finalMessage)', async () => {
  const m = await anth.messages.create({ model: MODEL, max_tokens: 8, messages: USER });
  assert.equal(m.type, 'message');
  assert.equal(m.role, 'assistant');
  assert.match(m.id, /^msg_/);
  assert.ok(['max_tokens', 'end_turn'].includes(m.stop_reason), m.stop_reason);
  assert.ok(m.usage.output_tokens >= 1 && m.usage.output_tokens <= 8);
  assert.ok(m.usage.input_tokens + (m.usage.cache_read_input_tokens ?? 0) > 0);
  const stream = anth.messages.stream({ model: MODEL, max_tokens: 6, messages: USER });
  let deltas = 0;
  stream.on('text', () => deltas++);
  const fm = await stream.finalMessage();
  assert.equal(fm.type, 'message');
  assert.ok(['max_tokens', 'end_turn'].includes(fm.stop_reason), fm.stop_reason);
  assert.ok(fm.usage.output_tokens >= 1 && fm.usage.output_tokens <= 6);
});

test('messages count_tokens', async () => {
  const c = await anth.messages.countTokens({ model: MODEL, messages: USER });
  assert.ok(Number.isInteger(c.input_tokens) && c.input_tokens > 0, JSON.stringify(c));
  const c2 = await anth.messages.countTokens({ model: MODEL, messages: [{ role: 'user', content: longText(50) }] });
  assert.ok(c2.input_tokens > c.input_tokens);
});

// ------------------------------------------------------------------------------------------------
const SCHEMA = { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] };
const CHAT_TOOLS = [{ type: 'function', function: { name: 'get_weather', description: 'Current weather of a city', parameters: SCHEMA } }];
const RESPONSES_TOOLS = [{ type: 'function', name: 'get_weather', description: 'Current weather of a city', parameters: SCHEMA, strict: false }];
const ANTH_TOOLS = [{ name: 'get_weather', description: 'Current weather of a city', input_schema: SCHEMA }];
const ASK = [{ role: 'user', content: 'What is the weather in Paris?' }];

test('chat tool call round trip (thinking on by default)', async () => {
  const r1 = await toai.chat.completions.create({ model: MODEL, messages: ASK, tools: CHAT_TOOLS });
  const msg = r1.choices[0].message;
  assert.equal(r1.choices[0].finish_reason, 'tool_calls');
  assert.equal(msg.reasoning_content, 'reasoning...');
  assert.equal(msg.tool_calls.length, 1);
  const tc = msg.tool_calls[0];
  assert.equal(tc.type, 'function');
  assert.equal(tc.function.name, 'get_weather');
  assert.deepEqual(JSON.parse(tc.function.arguments), { city: 'Paris' });
  assert.match(tc.id, /^call_/);
  const r2 = await toai.chat.completions.create({
    model: MODEL, tools: CHAT_TOOLS,
    messages: [...ASK, msg, { role: 'tool', tool_call_id: tc.id, content: '{"temp_c": 21}' }],
  });
  assert.ok(r2.usage.prompt_tokens_details.cached_tokens > 0, JSON.stringify(r2.usage));
  assert.ok(r2.usage.prompt_tokens > r1.usage.prompt_tokens);
});

test('chat tool call, streamed', async () => {
  const s = await toai.chat.completions.create({ model: MODEL, messages: ASK, tools: CHAT_TOOLS, stream: true });
  const calls = [];
  let finish = null, reasoning = '';
  for await (const c of s) {
    for (const ch of c.choices) {
      if (ch.finish_reason) finish = ch.finish_reason;
      reasoning += ch.delta.reasoning_content ?? '';
      for (const d of ch.delta.tool_calls ?? []) {
        calls[d.index] ??= { id: '', name: '', args: '' };
        if (d.id) calls[d.index].id = d.id;
        if (d.function?.name) calls[d.index].name += d.function.name;
        if (d.function?.arguments) calls[d.index].args += d.function.arguments;
      }
    }
  }
  assert.equal(finish, 'tool_calls');
  assert.equal(reasoning, 'reasoning...');
  assert.equal(calls.length, 1);
  assert.equal(calls[0].name, 'get_weather');
  assert.match(calls[0].id, /^call_/);
  assert.deepEqual(JSON.parse(calls[0].args), { city: 'Paris' });
});

test('thinking on/off and reasoning effort (chat)', async () => {
  const off = await toai.chat.completions.create({ model: MODEL, messages: ASK, tools: CHAT_TOOLS, reasoning_effort: 'none' });
  assert.ok(!off.choices[0].message.reasoning_content, `reasoning in chat mode: ${off.choices[0].message.reasoning_content}`);
  assert.equal(off.usage.completion_tokens_details?.reasoning_tokens ?? 0, 0);
  const off2 = await toai.chat.completions.create({ model: MODEL, messages: ASK, tools: CHAT_TOOLS, thinking: { type: 'disabled' } });
  assert.ok(!off2.choices[0].message.reasoning_content);
  for (const effort of ['low', 'high', 'max']) {
    const on = await toai.chat.completions.create({ model: MODEL, messages: ASK, tools: CHAT_TOOLS, reasoning_effort: effort });
    assert.equal(on.choices[0].message.reasoning_content, 'reasoning...', effort);
    assert.ok(on.usage.completion_tokens_details.reasoning_tokens > 0, effort);
  }
  await assert.rejects(
    toai.chat.completions.create({ model: MODEL, messages: ASK, reasoning_effort: 'enormous' }),
    (e) => e.status === 400 && /reasoning_effort/.test(e.message));
});

test('responses tool call round trip and reasoning controls', async () => {
  const r1 = await toai.responses.create({ model: MODEL, input: ASK, tools: RESPONSES_TOOLS, reasoning: { effort: 'high' } });
  assert.equal(r1.status, 'completed');
  const fc = r1.output.find((o) => o.type === 'function_call');
  assert.ok(fc, JSON.stringify(r1.output));
  assert.equal(fc.name, 'get_weather');
  assert.deepEqual(JSON.parse(fc.arguments), { city: 'Paris' });
  assert.ok(fc.call_id);
  assert.ok(r1.output.some((o) => o.type === 'reasoning'), 'a reasoning item');
  const r2 = await toai.responses.create({
    model: MODEL, tools: RESPONSES_TOOLS, reasoning: { effort: 'high' },
    input: [...ASK, ...r1.output, { type: 'function_call_output', call_id: fc.call_id, output: '{"temp_c": 21}' }],
  });
  assert.ok(r2.usage.input_tokens_details.cached_tokens > 0, JSON.stringify(r2.usage));
  const off = await toai.responses.create({ model: MODEL, input: ASK, tools: RESPONSES_TOOLS, reasoning: { effort: 'none' } });
  assert.ok(!off.output.some((o) => o.type === 'reasoning'), 'no reasoning item with effort none');
});

test('messages tool use round trip and thinking on/off', async () => {
  const m1 = await tanth.messages.create({
    model: MODEL, max_tokens: 512, messages: ASK, tools: ANTH_TOOLS, thinking: { type: 'enabled', budget_tokens: 1024 },
  });
  assert.equal(m1.stop_reason, 'tool_use');
  const th = m1.content.find((b) => b.type === 'thinking');
  assert.ok(th && th.thinking === 'reasoning...', JSON.stringify(m1.content));
  const tu = m1.content.find((b) => b.type === 'tool_use');
  assert.ok(tu, JSON.stringify(m1.content));
  assert.equal(tu.name, 'get_weather');
  assert.deepEqual(tu.input, { city: 'Paris' });
  const m2 = await tanth.messages.create({
    model: MODEL, max_tokens: 512, tools: ANTH_TOOLS, thinking: { type: 'enabled', budget_tokens: 1024 },
    messages: [...ASK, { role: 'assistant', content: m1.content },
      { role: 'user', content: [{ type: 'tool_result', tool_use_id: tu.id, content: '21 degrees' }] }],
  });
  assert.ok(m2.usage.cache_read_input_tokens > 0, JSON.stringify(m2.usage));
  // Streamed, with the SDK's accumulator.
  const fm = await tanth.messages.stream({ model: MODEL, max_tokens: 512, messages: ASK, tools: ANTH_TOOLS }).finalMessage();
  assert.equal(fm.stop_reason, 'tool_use');
  assert.deepEqual(fm.content.find((b) => b.type === 'tool_use').input, { city: 'Paris' });
  // Anthropic semantics: no thinking unless asked.
  assert.ok(!fm.content.some((b) => b.type === 'thinking'), JSON.stringify(fm.content));
});

// ------------------------------------------------------------------------------------------------
test('errors: bad field 400 names the field, in each dialect shape', async () => {
  await assert.rejects(oai.chat.completions.create({ model: MODEL, messages: USER, temperature: 500 }),
    (e) => e.status === 400 && /temperature/.test(e.message));
  await assert.rejects(oai.chat.completions.create({ model: MODEL, messages: 'hi' }),
    (e) => e.status === 400 && /messages/.test(e.message));
  await assert.rejects(oai.responses.create({ model: MODEL, input: 'x', previous_response_id: 'resp_1' }),
    (e) => e.status === 400 && /previous_response_id/.test(e.message));
  await assert.rejects(anth.messages.create({ model: MODEL, messages: USER, max_tokens: -3 }),
    (e) => e.status === 400 && e.error?.type === 'error' && e.error?.error?.type === 'invalid_request_error' && /max_tokens/.test(e.message));
});

test('errors: wrong or missing API key -> 401', async () => {
  const bad = new OpenAI({ baseURL: `${main.url}/v1`, apiKey: 'wrong', maxRetries: 0 });
  await assert.rejects(bad.chat.completions.create({ model: MODEL, messages: USER, max_tokens: 1 }),
    (e) => e.status === 401 && e instanceof OpenAI.AuthenticationError);
  const badA = new Anthropic({ baseURL: main.url, apiKey: 'wrong', maxRetries: 0 });
  await assert.rejects(badA.messages.create({ model: MODEL, messages: USER, max_tokens: 1 }),
    (e) => e.status === 401 && e.error?.error?.type === 'authentication_error');
  const none = await http(`${main.url}/v1/models`, { method: 'GET' });
  assert.equal(none.status, 401);
  const health = await http(`${main.url}/health`, { method: 'GET' });
  assert.equal(health.status, 200, '/health needs no key');
});

test('errors: unknown path 404, wrong method 405 (JSON bodies)', async () => {
  const a = await http(`${main.url}/v1/nothing-here`, { method: 'GET', headers: AUTH });
  assert.equal(a.status, 404);
  assert.ok(a.json?.error?.message, a.text);
  const b = await http(`${main.url}/v1/models`, { body: {}, headers: AUTH });
  assert.equal(b.status, 405);
  assert.ok(b.json?.error, b.text);
  const c = await http(`${main.url}/v1/chat/completions`, { method: 'GET', headers: AUTH });
  assert.equal(c.status, 405);
});

test('CORS only with --cors', async () => {
  const pre = await fetch(`${tools.url}/v1/chat/completions`, {
    method: 'OPTIONS', headers: { origin: 'http://example.com', 'access-control-request-method': 'POST' },
  });
  assert.equal(pre.status, 204);
  assert.equal(pre.headers.get('access-control-allow-origin'), '*');
  const noCors = await fetch(`${main.url}/health`, { headers: { origin: 'http://example.com' } });
  assert.equal(noCors.headers.get('access-control-allow-origin'), null);
});

test('cancellation by disconnect: the job stops, the server keeps serving', async () => {
  const before = await metrics(long.url);
  const cancelled0 = metric(before, 'dsv4_requests_total{status="cancelled"}');
  const ac = new AbortController();
  const s = await loai.chat.completions.create(
    { model: MODEL, messages: USER, stream: true, reasoning_effort: 'none' }, { signal: ac.signal });
  let n = 0;
  try {
    for await (const c of s) {
      if (c.choices[0]?.delta?.content) n++;
      if (n >= 3) {
        ac.abort(); // the SDK ends the iteration (or throws an abort error)
        break;
      }
    }
  } catch (e) {
    if (!(e instanceof OpenAI.APIUserAbortError) && e?.name !== 'AbortError') throw e;
  }
  assert.ok(n >= 3);
  const m = await eventually(async () => {
    const t = await metrics(long.url);
    return metric(t, 'dsv4_requests_total{status="cancelled"}') > cancelled0 ? t : null;
  }, 30000, 'the cancelled request in /metrics');
  assert.ok(metric(m, 'dsv4_client_disconnects_total') >= 1);
  // A full generation of the long script would take minutes; the server answers now.
  const r = await loai.chat.completions.create({ model: MODEL, messages: USER, max_tokens: 2 });
  assert.equal(r.usage.completion_tokens, 2);
  // A non-streamed request abandoned while it runs is cancelled too.
  const ac2 = new AbortController();
  const p = loai.chat.completions.create({ model: MODEL, messages: USER, max_tokens: 100000, reasoning_effort: 'none' }, { signal: ac2.signal });
  await sleep(1500);
  ac2.abort();
  await assert.rejects(p);
  await eventually(async () => metric(await metrics(long.url), 'dsv4_requests_total{status="cancelled"}') >= cancelled0 + 2,
    30000, 'the abandoned non-streamed request to be cancelled');
});

test('a full queue answers 429 with Retry-After', async () => {
  // The server runs one job and queues at most one (--queue 1). The second stream is sent only
  // once the first is running: sent together, the second can reach a queue still holding the
  // first (the worker not yet scheduled) and be refused itself, so nothing would wait.
  const acs = [new AbortController(), new AbortController()];
  const body = JSON.stringify({ model: MODEL, messages: USER, stream: true, reasoning_effort: 'none' });
  const open = (ac) => fetch(`${long.url}/v1/chat/completions`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body, signal: ac.signal,
  }).catch(() => null);
  const streams = [];
  const idle = (t) => metric(t, 'dsv4_running_jobs') === 0 && metric(t, 'dsv4_queue_depth') === 0;
  await eventually(async () => idle(await metrics(long.url)), 30000, 'an idle server (earlier jobs done)');
  try {
    streams.push(open(acs[0]));
    await eventually(async () => {
      const t = await metrics(long.url);
      return metric(t, 'dsv4_running_jobs') === 1 && metric(t, 'dsv4_queue_depth') === 0;
    }, 30000, 'the first job to run');
    streams.push(open(acs[1]));
    await eventually(async () => metric(await metrics(long.url), 'dsv4_queue_depth') >= 1, 30000,
      'one running and one queued job');
    const r = await http(`${long.url}/v1/chat/completions`, { body: { model: MODEL, messages: USER, max_tokens: 1 } });
    assert.equal(r.status, 429, r.text);
    assert.ok(r.headers.get('retry-after'), 'Retry-After header');
    assert.ok(r.json?.error?.message, r.text);
  } finally {
    for (const ac of acs) ac.abort();
    await Promise.allSettled(streams);
  }
  await eventually(async () => {
    const t = await metrics(long.url);
    return metric(t, 'dsv4_queue_depth') === 0 && metric(t, 'dsv4_requests_total{status="rejected"}') >= 1;
  }, 30000, 'the queue to drain after the clients left');
  const ok = await loai.chat.completions.create({ model: MODEL, messages: USER, max_tokens: 1 });
  assert.equal(ok.usage.completion_tokens, 1);
});

test('metrics', async () => {
  const t = await metrics(main.url, AUTH);
  for (const name of ['dsv4_prompt_tokens_total', 'dsv4_generated_tokens_total', 'dsv4_cached_tokens_total',
    'dsv4_requests_total{status="ok"}', 'dsv4_cache_hits_total{kind="memory"}', 'dsv4_cache_hits_total{kind="disk"}',
    'dsv4_cache_hits_total{kind="miss"}', 'dsv4_queue_depth', 'dsv4_live_sessions', 'dsv4_session_bytes',
    'dsv4_disk_bytes', 'dsv4_prefill_tokens_per_second', 'dsv4_decode_tokens_per_second',
    'process_resident_memory_bytes']) {
    assert.ok(metric(t, name) !== undefined && !Number.isNaN(metric(t, name)), `${name} missing`);
  }
  assert.ok(metric(t, 'dsv4_generated_tokens_total') > 0);
  assert.ok(metric(t, 'dsv4_cached_tokens_total') > 0);
  assert.ok(metric(t, 'dsv4_requests_total{status="ok"}') > 0);
});

const failed = await run('e2e sdk');
for (const s of [main, tools, long]) {
  const { code, signal } = await s.stop();
  if (code !== 0) {
    console.log(`server ${s.url} exited with ${code ?? signal}; stderr:\n${s.stderr().slice(-4000)}`);
    process.exitCode = 1;
  }
}
if (failed) {
  for (const s of [main, tools, long]) console.log(`--- ${s.url} stderr (tail) ---\n${s.stderr().slice(-3000)}`);
  process.exitCode = 1;
}
