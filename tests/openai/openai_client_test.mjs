// The official openai npm client against xpd's OpenAI-compatible endpoint.
// Run by tests/openai/run_node_test.sh, which starts a real local cluster
// (`xpd up --http-port 0 --api-key ...`) and passes XPD_HTTP / XPD_API_KEY.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import OpenAI from 'openai';

const baseURL = `http://${process.env.XPD_HTTP}/v1`;
const apiKey = process.env.XPD_API_KEY;
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 60_000 });
const messages = [{ role: 'user', content: 'Say hello.' }];

test('models.list names the served model', async () => {
  const ids = [];
  for await (const model of client.models.list()) ids.push(model.id);
  assert.deepEqual(ids, ['default']);
});

test('chat completion, non-streaming and streaming agree (greedy)', async () => {
  const completion = await client.chat.completions.create({
    model: 'default', messages, max_tokens: 6, temperature: 0,
  });
  assert.equal(completion.object, 'chat.completion');
  assert.match(completion.id, /^chatcmpl-/);
  assert.equal(completion.choices.length, 1);
  const choice = completion.choices[0];
  assert.equal(choice.message.role, 'assistant');
  assert.equal(typeof choice.message.content, 'string');
  assert.ok(['stop', 'length'].includes(choice.finish_reason));
  assert.ok(completion.usage.prompt_tokens > 0);
  assert.ok(completion.usage.completion_tokens >= 1 && completion.usage.completion_tokens <= 6);
  assert.equal(completion.usage.total_tokens,
    completion.usage.prompt_tokens + completion.usage.completion_tokens);

  const stream = await client.chat.completions.create({
    model: 'default', messages, max_tokens: 6, temperature: 0, stream: true,
    stream_options: { include_usage: true },
  });
  let text = '';
  let finish = null;
  let usage = null;
  let role = null;
  for await (const chunk of stream) {
    assert.equal(chunk.object, 'chat.completion.chunk');
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      if (c.delta.role) role = c.delta.role;
      text += c.delta.content ?? '';
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  assert.equal(role, 'assistant');
  assert.equal(text, choice.message.content);
  assert.equal(finish, choice.finish_reason);
  assert.deepEqual(usage, completion.usage);
});

test('text completion, non-streaming and streaming (text and token prompts)', async () => {
  const completion = await client.completions.create({
    model: 'default', prompt: 'Once upon a time', max_tokens: 5, temperature: 0, seed: 7,
    logprobs: 2,
  });
  assert.equal(completion.object, 'text_completion');
  assert.match(completion.id, /^cmpl-/);
  const choice = completion.choices[0];
  assert.equal(typeof choice.text, 'string');
  assert.equal(choice.logprobs.tokens.length, completion.usage.completion_tokens);
  assert.equal(choice.logprobs.token_logprobs.length, completion.usage.completion_tokens);

  const stream = await client.completions.create({
    model: 'default', prompt: [1, 2, 3, 4], max_tokens: 4, temperature: 0, stream: true,
  });
  let chunks = 0;
  let finish = null;
  for await (const chunk of stream) {
    chunks += 1;
    if (chunk.choices[0]?.finish_reason) finish = chunk.choices[0].finish_reason;
  }
  assert.ok(chunks >= 2);
  assert.ok(['stop', 'length'].includes(finish));
});

test('errors: n=2 is a 400, an unknown model a 404, a wrong key a 401', async () => {
  await assert.rejects(
    client.chat.completions.create({ model: 'default', messages, n: 2 }),
    (error) => {
      assert.ok(error instanceof OpenAI.BadRequestError);
      assert.equal(error.status, 400);
      assert.equal(error.param, 'n');
      assert.match(error.message, /n=1/);
      return true;
    });
  await assert.rejects(
    client.completions.create({ model: 'no-such-model', prompt: 'x', max_tokens: 1 }),
    (error) => error instanceof OpenAI.NotFoundError && error.status === 404);
  const wrongKey = new OpenAI({ baseURL, apiKey: 'wrong', maxRetries: 0 });
  await assert.rejects(wrongKey.models.list(),
    (error) => error instanceof OpenAI.AuthenticationError && error.status === 401);
});
