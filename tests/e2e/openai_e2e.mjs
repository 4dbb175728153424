// End-to-end test of `hetmoe serve` with the official openai npm client (pinned in package-lock.json).
// usage: node openai_e2e.mjs BUILD/bin/hetmoe tests/data/gpt-oss-tiny.gguf
// The tiny model has random weights: its answers are garbage, which must still come back as text.
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { startServer } from './server_harness.mjs';

const [binary, model] = process.argv.slice(2);
const KEY = 'e2e-key';
let failures = 0;
async function check(name, fn) {
  try {
    await fn();
    console.log(`ok   ${name}`);
  } catch (e) {
    ++failures;
    console.log(`FAIL ${name}\n     ${(e && e.stack) || e}`);
  }
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function metrics(base) {
  const text = await (await fetch(`${base}/metrics`, { headers: { Authorization: `Bearer ${KEY}` } })).text();
  const value = (name) => {
    const m = text.match(new RegExp(`^${name} ([0-9.]+)$`, 'm'));
    return m ? Number(m[1]) : NaN;
  };
  return { text, value };
}
async function waitIdle(base) {
  for (let i = 0; i < 100; ++i) {
    const m = await metrics(base);
    if (m.value('hetmoe_slots_busy') === 0 && m.value('hetmoe_queue_length') === 0) return m;
    await sleep(50);
  }
  throw new Error('slots still busy after 5 s:\n' + (await metrics(base)).text);
}

const server = await startServer(binary, ['-m', model, '-t', '1', '-c', '16384', '--parallel', '8', '--api-key', KEY,
  '-n', '24', '--max-body', '300000', '--alias', 'tiny']);
const client = new OpenAI({ baseURL: `${server.base}/v1`, apiKey: KEY, maxRetries: 0 });
const user = (text) => [{ role: 'user', content: text }];

await check('/health and /v1/models', async () => {
  assert.equal((await fetch(`${server.base}/health`)).status, 200);
  const models = await client.models.list();
  assert.deepEqual(models.data.map((m) => m.id), ['tiny']);
  assert.equal((await client.models.retrieve('tiny')).id, 'tiny');
  await assert.rejects(client.models.retrieve('other'), (e) => e.status === 404 && e.code === 'model_not_found');
});

await check('the API key: missing or wrong is 401, /health needs none', async () => {
  for (const apiKey of ['wrong', 'e2e-ke']) {
    const bad = new OpenAI({ baseURL: `${server.base}/v1`, apiKey, maxRetries: 0 });
    await assert.rejects(bad.models.list(), (e) => e.status === 401 && e.code === 'invalid_api_key');
  }
  const r = await fetch(`${server.base}/v1/models`);
  assert.equal(r.status, 401);
  assert.equal((await r.json()).error.code, 'invalid_api_key');
});

await check('no CORS headers without --cors-origin', async () => {
  const r = await fetch(`${server.base}/v1/models`, { headers: { Authorization: `Bearer ${KEY}`, Origin: 'http://evil.example' } });
  assert.equal(r.headers.get('access-control-allow-origin'), null);
});

await check('chat, not streamed', async () => {
  const c = await client.chat.completions.create({ model: 'tiny', messages: user('Hello!'), max_tokens: 8, temperature: 0 });
  assert.equal(c.object, 'chat.completion');
  assert.equal(c.choices[0].message.role, 'assistant');
  assert.equal(typeof c.choices[0].message.content, 'string');
  assert.equal(c.choices[0].finish_reason, 'length');
  assert.equal(c.usage.completion_tokens, 8);
  assert.ok(c.usage.prompt_tokens > 0);
  assert.equal(c.usage.total_tokens, c.usage.prompt_tokens + 8);
  assert.equal(typeof c.usage.prompt_tokens_details.cached_tokens, 'number');
  assert.equal(typeof c.usage.completion_tokens_details.reasoning_tokens, 'number');
});

await check('chat, streamed with include_usage (the SDK stream helper accepts it)', async () => {
  const stream = client.chat.completions.stream({ model: 'tiny', messages: user('Count.'), max_tokens: 6, temperature: 0,
    stream_options: { include_usage: true } });
  let chunks = 0;
  for await (const chunk of stream) ++chunks;
  const final = await stream.finalChatCompletion();
  assert.ok(chunks >= 3);
  assert.equal(final.choices[0].finish_reason, 'length');
  assert.equal(final.usage.completion_tokens, 6);
});

await check('chat with tools: accepted, the answer parses', async () => {
  const c = await client.chat.completions.create({ model: 'tiny', max_tokens: 10, messages: [
    { role: 'system', content: 'Use tools.' },
    { role: 'user', content: 'Weather in Paris?' },
    { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }] },
    { role: 'tool', tool_call_id: 'call_1', content: 'sunny' }],
    tools: [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } } }],
    reasoning_effort: 'low' });
  assert.ok(['length', 'stop', 'tool_calls'].includes(c.choices[0].finish_reason));
});

await check('responses, not streamed: incomplete at max_output_tokens', async () => {
  // temperature 0: a sampled answer of the random weights can end at a stop token first (1 run in ~25 at 16 tokens).
  const r = await client.responses.create({ model: 'tiny', input: 'Hi', max_output_tokens: 5, instructions: 'Be brief.',
    temperature: 0 });
  assert.equal(r.object, 'response');
  assert.equal(r.status, 'incomplete');
  assert.equal(r.incomplete_details.reason, 'max_output_tokens');
  assert.equal(r.usage.output_tokens, 5);
  assert.equal(typeof r.output_text, 'string');
});

await check('responses, streamed (the SDK accumulator accepts every event)', async () => {
  const stream = client.responses.stream({ model: 'tiny', input: [{ role: 'user', content: 'Hi' }], max_output_tokens: 7,
    reasoning: { effort: 'high' }, temperature: 0 });
  const types = [];
  for await (const event of stream) types.push(event.type);
  const final = await stream.finalResponse();
  assert.equal(types[0], 'response.created');
  assert.equal(types.at(-1), 'response.incomplete');
  assert.equal(final.status, 'incomplete');
  assert.equal(final.usage.output_tokens, 7);
});

await check('completions, streamed and not', async () => {
  const c = await client.completions.create({ model: 'tiny', prompt: 'Once upon a time', max_tokens: 5, temperature: 0 });
  assert.equal(c.object, 'text_completion');
  assert.equal(typeof c.choices[0].text, 'string');
  assert.equal(c.usage.completion_tokens, 5);
  const s = await client.completions.create({ model: 'tiny', prompt: 'Once upon a time', max_tokens: 5, temperature: 0, stream: true });
  let text = '';
  for await (const chunk of s) text += chunk.choices[0]?.text ?? '';
  assert.equal(text, c.choices[0].text);
});

await check('a stop string ends the answer before it (finish_reason stop), streamed and not', async () => {
  const ask = { model: 'tiny', messages: user('Say something long.'), max_tokens: 24, temperature: 0 };
  const full = (await client.chat.completions.create(ask)).choices[0].message.content;
  assert.ok(full.length >= 8, full);
  const stop = full.slice(4, 7);
  const expected = full.slice(0, full.indexOf(stop));
  const cut = await client.chat.completions.create({ ...ask, stop: [stop] });
  assert.equal(cut.choices[0].message.content, expected);
  assert.equal(cut.choices[0].finish_reason, 'stop');
  const s = await client.chat.completions.create({ ...ask, stop, stream: true });
  let text = '';
  let finish = null;
  for await (const chunk of s) {
    text += chunk.choices[0]?.delta?.content ?? '';
    finish = chunk.choices[0]?.finish_reason ?? finish;
  }
  assert.equal(text, expected);
  assert.equal(finish, 'stop');
});

async function streamedText(prompt) {
  const s = await client.chat.completions.create({ model: 'tiny', messages: user(prompt), max_tokens: 16, temperature: 0, stream: true });
  let text = '';
  for await (const chunk of s) text += chunk.choices[0]?.delta?.content ?? '';
  return text;
}

await check('8 concurrent streams at temperature 0 equal their solo runs', async () => {
  const prompts = Array.from({ length: 8 }, (_, i) => `Stream number ${i}: tell me about ${['cats', 'dogs', 'rain', 'tea', 'maps', 'ships', 'bread', 'glass'][i]}.`);
  const solo = [];
  for (const p of prompts) solo.push(await streamedText(p));
  const together = await Promise.all(prompts.map(streamedText));
  assert.deepEqual(together, solo);
  assert.ok(solo.every((t) => t.length > 0));
});

let secondTurn = null;
let secondTurnAnswer = null;
await check('prompt cache: the next turn of a chat reuses the first turn (cached_tokens)', async () => {
  const first = user('Tell me a story about a lighthouse keeper.');
  const a = await client.chat.completions.create({ model: 'tiny', messages: first, max_tokens: 12, temperature: 0 });
  secondTurn = [...first, { role: 'assistant', content: a.choices[0].message.content }, { role: 'user', content: 'And then?' }];
  const b = await client.chat.completions.create({ model: 'tiny', max_tokens: 12, temperature: 0, messages: secondTurn });
  secondTurnAnswer = b.choices[0].message.content;
  assert.ok(b.usage.prompt_tokens_details.cached_tokens >= a.usage.prompt_tokens - 1,
    `cached ${b.usage.prompt_tokens_details.cached_tokens}, first prompt ${a.usage.prompt_tokens}`);
  const m = await metrics(server.base);
  assert.ok(m.value('hetmoe_prompt_cache_hits_total') >= 1);
});

// Bad inputs: OpenAI's error shape, a 4xx, the field named.
async function post(path, body, headers = {}) {
  const r = await fetch(`${server.base}${path}`, { method: 'POST', body: typeof body === 'string' ? body : JSON.stringify(body),
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${KEY}`, ...headers } });
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* checked below */ }
  return { status: r.status, json, text };
}
const badCases = [
  ['/v1/chat/completions', '{"messages": [', 400, null, 'invalid_json'],
  ['/v1/chat/completions', {}, 400, 'messages'],
  ['/v1/chat/completions', { messages: 'hi' }, 400, 'messages'],
  ['/v1/chat/completions', { messages: [{ role: 'wizard', content: 'x' }] }, 400, 'messages[0].role'],
  ['/v1/chat/completions', { messages: user('x'), temperature: 'hot' }, 400, 'temperature'],
  ['/v1/chat/completions', { messages: user('x'), n: 3 }, 400, 'n'],
  ['/v1/chat/completions', { messages: user('x'), max_tokens: -1 }, 400, 'max_tokens'],
  ['/v1/chat/completions', { messages: user('x'), logprobs: true }, 400, 'logprobs'],
  ['/v1/chat/completions', { messages: user('hello '.repeat(20000)) }, 400, 'messages', 'context_length_exceeded'],
  ['/v1/responses', {}, 400, 'input'],
  ['/v1/responses', { input: 'x', previous_response_id: 'resp_1' }, 400, 'previous_response_id'],
  ['/v1/responses', { input: [{ type: 'message', role: 'robot', content: 'x' }] }, 400, 'input[0].role'],
  ['/v1/completions', { prompt: 5 }, 400, 'prompt'],
  ['/v1/completions', { prompt: [999999] }, 400, 'prompt[0]'],
  ['/v1/chat/completions', { messages: user('x'.repeat(400000)) }, 413, null, 'request_too_large'],
];
await check('every bad input is a 4xx in OpenAI\'s error shape naming the field', async () => {
  for (const [path, body, status, param, code] of badCases) {
    const r = await post(path, body);
    const what = `${path} ${typeof body === 'string' ? body : JSON.stringify(body).slice(0, 80)}`;
    assert.equal(r.status, status, `${what}: ${r.text.slice(0, 300)}`);
    assert.ok(r.json && r.json.error, `${what}: not an error object: ${r.text.slice(0, 200)}`);
    for (const k of ['message', 'type', 'param', 'code']) assert.ok(k in r.json.error, `${what}: no error.${k}`);
    if (param) assert.equal(r.json.error.param, param, `${what}: ${r.json.error.message}`);
    if (code) assert.equal(r.json.error.code, code, `${what}: ${r.json.error.message}`);
  }
  const nf = await fetch(`${server.base}/v1/nothing`, { headers: { Authorization: `Bearer ${KEY}` } });
  assert.equal(nf.status, 404);
  assert.equal((await nf.json()).error.code, 'not_found');
  // The SDK surfaces them as its error classes.
  await assert.rejects(client.chat.completions.create({ model: 'tiny', messages: user('x'), n: 2 }),
    (e) => e.status === 400 && e.param === 'n');
});

await check('no slot leaks after all of the above; /metrics in Prometheus text', async () => {
  const m = await waitIdle(server.base);
  assert.match(m.text, /^# TYPE hetmoe_requests_total counter$/m);
  assert.match(m.text, /^hetmoe_requests_total\{path="\/v1\/chat\/completions",status="400"\} \d+$/m);
  assert.ok(m.value('hetmoe_generated_tokens_total') > 0);
  assert.equal(m.value('hetmoe_slots'), 8);
});
await server.stop();

// A second server: one slot, a queue of one, no token cap.
const small = await startServer(binary, ['-m', model, '-t', '1', '-c', '131072', '--parallel', '1', '--max-queue', '1',
  '--no-cache-prompt']);
const smallClient = new OpenAI({ baseURL: `${small.base}/v1`, apiKey: 'none', maxRetries: 0 });
await check('the cached second turn equals the same turn computed from scratch (--no-cache-prompt)', async () => {
  const c = await smallClient.chat.completions.create({ model: 'x', max_tokens: 12, temperature: 0, messages: secondTurn });
  assert.equal(c.usage.prompt_tokens_details.cached_tokens, 0);
  assert.equal(c.choices[0].message.content, secondTurnAnswer);
});
await check('the server says on stderr when it is ready', async () => {
  assert.match(small.stderr(), /ready: 1 slot/);
});
await check('a full queue is 503 with Retry-After; a cancelled stream frees its slot', async () => {
  // A random-weight model may end even "Go on forever." with a stop token; when the long job has ended before the
  // second request was queued, the precondition (slot busy, queue full) never held: try again with a new job.
  let controller, queued;
  for (let attempt = 0; ; ++attempt) {
    assert.ok(attempt < 5, 'the long job ended before the second request was queued, 5 times');
    controller = new AbortController();
    const long = await smallClient.chat.completions.create({ model: 'x', messages: user('Go on forever.'),
      max_tokens: 120000, stream: true }, { signal: controller.signal });
    const it = long[Symbol.asyncIterator]();
    await it.next();  // the first chunk: the job holds the slot
    queued = smallClient.chat.completions.create({ model: 'x', messages: user('Short.'), max_tokens: 3 });
    let state = 'waiting';
    for (let i = 0; state === 'waiting'; ++i) {
      assert.ok(i < 1200, 'the second request never reached the queue while the slot was busy');
      const m = await metrics(small.base);
      if (m.value('hetmoe_queue_length') === 1) state = 'queued';
      else if (m.value('hetmoe_slots_busy') === 0 && m.value('hetmoe_queue_length') === 0) state = 'ended';
      else await sleep(25);
    }
    if (state === 'queued') break;
    await queued;
    await waitIdle(small.base);
  }
  const r = await fetch(`${small.base}/v1/chat/completions`, { method: 'POST', body: JSON.stringify({ messages: user('x') }) });
  assert.equal(r.status, 503);
  assert.equal(r.headers.get('retry-after'), '1');
  assert.equal((await r.json()).error.code, 'queue_full');
  controller.abort();
  const q = await queued;  // served once the cancelled job left the slot
  assert.equal(q.usage.completion_tokens, 3);
  const m = await metrics(small.base);
  assert.ok(m.value('hetmoe_generated_tokens_total') < 100000, 'the cancelled job stopped early');
  await waitIdle(small.base);
});
const code = await small.stop();
await check('SIGTERM stops the server cleanly', async () => assert.equal(code, 0));

console.log(failures === 0 ? 'all passed' : `${failures} failed`);
process.exit(failures === 0 ? 0 : 1);
