// The official `openai` npm package against `shoal api` (run by
// test_api.sh, which installs the package into a temporary folder).
//   node api_openai.mjs BASE_URL API_KEY MODEL EXPECTED_FILE
// EXPECTED_FILE holds the greedy continuation of "Once upon a time" (60
// tokens). Checks: models.list and models.retrieve; completions and chat
// completions, plain and streaming, greedy, equal to the reference (a model
// without a chat template continues the user's text); usage in plain answers
// and in the last chunk with stream_options.include_usage; errors surface as
// the package's typed errors (404 for an unknown model, 401 for a wrong key,
// 400 for bad fields). Prints one line per check; exits 1 on any failure.
import { readFileSync } from 'node:fs';
import OpenAI from 'openai';

const [baseURL, apiKey, model, expectedFile] = process.argv.slice(2);
const expected = readFileSync(expectedFile, 'utf8');
const client = new OpenAI({ baseURL: `${baseURL}/v1`, apiKey, maxRetries: 0, timeout: 60000 });
const prompt = 'Once upon a time';
let failed = 0;

function check(name, cond, detail) {
  if (cond) {
    console.log(`ok: ${name}`);
  } else {
    failed++;
    console.log(`FAIL: ${name}${detail === undefined ? '' : `: ${detail}`}`);
  }
}

async function run(name, fn) {
  try {
    await fn();
  } catch (e) {
    failed++;
    console.log(`FAIL: ${name}: ${e && e.stack ? e.stack : e}`);
  }
}

await run('models', async () => {
  const list = await client.models.list();
  check('models.list has the model', list.data.some((m) => m.id === model),
        JSON.stringify(list.data));
  const m = await client.models.retrieve(model);
  check('models.retrieve', m.id === model && m.object === 'model', JSON.stringify(m));
});

await run('completion', async () => {
  const c = await client.completions.create({ model, prompt, temperature: 0, max_tokens: 60 });
  check('completion text is the reference', c.choices[0].text === expected,
        JSON.stringify(c.choices[0].text));
  check('completion finish_reason', c.choices[0].finish_reason === 'length',
        c.choices[0].finish_reason);
  check('completion usage', c.usage && c.usage.prompt_tokens === 5 &&
        c.usage.completion_tokens === 60 && c.usage.total_tokens === 65, JSON.stringify(c.usage));
});

await run('completion stream', async () => {
  const s = await client.completions.create({ model, prompt, temperature: 0, max_tokens: 60,
                                              stream: true });
  let text = '', chunks = 0, finish = null;
  for await (const ch of s) {
    chunks++;
    text += ch.choices[0]?.text ?? '';
    finish = ch.choices[0]?.finish_reason ?? finish;
  }
  check('streamed completion is the reference', text === expected, JSON.stringify(text));
  check('streamed completion came in many chunks', chunks > 10, chunks);
  check('streamed completion finish_reason', finish === 'length', finish);
});

await run('chat', async () => {
  const c = await client.chat.completions.create({
    model, messages: [{ role: 'user', content: prompt }], temperature: 0, max_tokens: 60 });
  const msg = c.choices[0].message;
  check('chat reply is the reference', msg.role === 'assistant' && msg.content === expected,
        JSON.stringify(msg));
  check('chat usage', c.usage && c.usage.completion_tokens === 60, JSON.stringify(c.usage));
  check('chat object', c.object === 'chat.completion' && c.id.startsWith('chatcmpl-'), c.object);
});

await run('chat stream', async () => {
  const s = await client.chat.completions.create({
    model, messages: [{ role: 'user', content: prompt }], temperature: 0, max_tokens: 60,
    stream: true, stream_options: { include_usage: true } });
  let text = '', role = null, usage = null, finish = null;
  for await (const ch of s) {
    if (ch.usage) usage = ch.usage;
    const d = ch.choices[0]?.delta;
    if (d?.role) role = d.role;
    text += d?.content ?? '';
    finish = ch.choices[0]?.finish_reason ?? finish;
  }
  check('streamed chat reply is the reference', text === expected, JSON.stringify(text));
  check('streamed chat role', role === 'assistant', role);
  check('streamed chat finish_reason', finish === 'length', finish);
  check('streamed chat usage chunk', usage && usage.completion_tokens === 60 &&
        usage.prompt_tokens === 5, JSON.stringify(usage));
});

await run('stop sequence', async () => {
  const c = await client.completions.create({ model, prompt, temperature: 0, max_tokens: 60,
                                              stop: ['Lily'] });
  const want = expected.slice(0, expected.indexOf('Lily'));
  check('stop cuts before the stop string', c.choices[0].text === want &&
        c.choices[0].finish_reason === 'stop', JSON.stringify(c.choices[0]));
});

await run('errors', async () => {
  try {
    await client.completions.create({ model: 'no-such-model', prompt, max_tokens: 1 });
    check('unknown model is refused', false);
  } catch (e) {
    check('unknown model: NotFoundError 404', e instanceof OpenAI.NotFoundError && e.status === 404,
          `${e.constructor.name} ${e.status}`);
    check('unknown model: error code', e.code === 'model_not_found', e.code);
  }
  try {
    await client.completions.create({ model, prompt, max_tokens: 1, n: 3 });
    check('n=3 is refused', false);
  } catch (e) {
    check('n=3: BadRequestError 400', e instanceof OpenAI.BadRequestError && e.status === 400 &&
          e.param === 'n', `${e.constructor.name} ${e.status} ${e.param}`);
  }
  const wrong = new OpenAI({ baseURL: `${baseURL}/v1`, apiKey: `${apiKey}-wrong`, maxRetries: 0 });
  try {
    await wrong.models.list();
    check('a wrong key is refused', apiKey === 'unused');
  } catch (e) {
    check('wrong key: AuthenticationError 401',
          e instanceof OpenAI.AuthenticationError && e.status === 401,
          `${e.constructor.name} ${e.status}`);
  }
});

console.log(failed ? `${failed} failed` : 'all passed');
process.exit(failed ? 1 : 0);
