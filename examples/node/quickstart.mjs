// sluice with the official OpenAI Node SDK.
//
// The SDK is used exactly as against OpenAI: only its base URL points at sluice.
// Four steps: a chat completion, a streamed one, an embedding, and the first
// chat completion sent again, which sluice answers from its cache.
//
//   npm ci --prefix examples/node
//   OPENAI_BASE_URL=http://127.0.0.1:8080/v1 node examples/node/quickstart.mjs
//
// Exits with 1 when the repeated request is not a cache hit.

import OpenAI from "openai";

const client = new OpenAI({
  baseURL: process.env.OPENAI_BASE_URL ?? "http://127.0.0.1:8080/v1",
  apiKey: process.env.OPENAI_API_KEY ?? "sk-example",
});

// The same request twice: the second is answered from sluice's cache.
const plain = {
  model: "gpt-4o-mini",
  messages: [{ role: "user", content: "Say hello to sluice from Node." }],
};

// A chat completion: its answer and the `x-sluice-cache` header.
async function plainChat() {
  const { data, response } = await client.chat.completions.create(plain).withResponse();
  return [data.choices[0].message.content ?? "", response.headers.get("x-sluice-cache")];
}

// 1. A chat completion.
const [answer, first] = await plainChat();
console.log(`chat: ${answer}`);

// 2. A streamed chat completion, printed as the deltas arrive.
const stream = await client.chat.completions.create({
  model: "gpt-4o-mini",
  messages: [{ role: "user", content: "Stream a short greeting from Node." }],
  stream: true,
});
process.stdout.write("stream: ");
for await (const chunk of stream) {
  process.stdout.write(chunk.choices[0]?.delta?.content ?? "");
}
process.stdout.write("\n");

// 3. An embedding.
const embedding = await client.embeddings.create({
  model: "text-embedding-3-small",
  input: "sluice caches answers",
});
console.log(`embedding: ${embedding.data[0].embedding.length} dimensions`);

// 4. The first chat completion again: a cache hit.
const [, repeat] = await plainChat();
console.log(`x-sluice-cache: first=${first} repeat=${repeat}`);
if (repeat !== "hit") {
  console.error(`expected the repeated request to be a cache hit, got ${JSON.stringify(repeat)}`);
  process.exit(1);
}
