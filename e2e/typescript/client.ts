// A whole chat session through a client generated from the live /api/schema/ (openapi-typescript
// types, openapi-fetch calls), compiled with `tsc --strict`: every success body is read with
// the generated types alone, no `any` and no cast. Run by e2e/test_typescript_client.py as
// `node build/client.js <base url>`; any failed expectation throws and exits non-zero.
import createClient from "openapi-fetch";
import type { components, paths } from "./schema.js";

type Message = components["schemas"]["Message"];
type ToolCall = components["schemas"]["ToolCall"];
type Appended = components["schemas"]["MessageAppend"];

function check(condition: boolean, what: string): asserts condition {
    if (!condition) {
        throw new Error(`expected: ${what}`);
    }
}

function ok<T>(result: { data?: T; error?: unknown; response: Response }, status: number, what: string): T {
    if (result.response.status !== status || result.data === undefined) {
        throw new Error(`${what}: ${result.response.status} ${JSON.stringify(result.error)}`);
    }
    return result.data;
}

// A single append answers its message; an array body, the array of messages.
function single(answer: Appended): Message {
    check(!Array.isArray(answer), "one message, not an array");
    return answer;
}

const baseUrl = process.argv[2];
check(baseUrl !== undefined, "the server's URL as the first argument");

// Sign up, log in, refresh.
const anonymous = createClient<paths>({ baseUrl });
const username = `ts-client-${Date.now()}`;
const password = "a long enough passphrase 42";
const user = ok(await anonymous.POST("/api/v1/auth/register/", { body: { username, password } }), 201, "register");
check(user.username === username, "the new user's name");
const pair = ok(await anonymous.POST("/api/v1/auth/token/", { body: { username, password } }), 200, "token");
const refreshed = ok(
    await anonymous.POST("/api/v1/auth/token/refresh/", { body: { refresh: pair.refresh } }),
    200,
    "refresh",
);
const api = createClient<paths>({ baseUrl, headers: { Authorization: `Bearer ${refreshed.access}` } });
const me = ok(await api.GET("/api/v1/auth/me/"), 200, "me");
check(me.id === user.id, "the refreshed token's user");

// A conversation with no body fields at all: the title is optional.
const conversation = ok(await api.POST("/api/v1/conversations/", { body: {} }), 201, "create");
check(conversation.title === "" && conversation.message_count === 0, "an untitled, empty conversation");
const listed = ok(await api.GET("/api/v1/conversations/"), 200, "list");
check(listed.results.some((c) => c.id === conversation.id) && listed.next === null, "the list shows it");
const inConversation = { params: { path: { conversation_pk: conversation.id } } };

async function append(body: components["schemas"]["MessageAppendRequest"], key?: string) {
    const params = { ...inConversation.params, header: key === undefined ? {} : { "Idempotency-Key": key } };
    return api.POST("/api/v1/conversations/{conversation_pk}/messages/", { params, body });
}

const question = single(ok(await append({ role: "user", content: "What is the weather in Paris?" }), 201, "append"));
check(question.role === "user" && question.tool_calls === null, "a user message without calls");
const call: ToolCall = {
    id: "call_1",
    type: "function",
    function: { name: "get_weather", arguments: '{"city": "Paris"}' },
};
const calling = single(ok(await append({ role: "assistant", content: null, tool_calls: [call] }), 201, "append calls"));
const stored = calling.tool_calls?.[0];
check(stored?.function.name === "get_weather" && stored.type === "function", "the stored tool call, typed");
check(calling.content === null && calling.tool_results === null, "an assistant message with calls only");
// The tool ran: its result is recorded on the message that made the call.
const answered = ok(
    await api.POST("/api/v1/conversations/{conversation_pk}/messages/{id}/tool-results/", {
        params: { path: { conversation_pk: conversation.id, id: calling.id } },
        body: { tool_results: [{ tool_call_id: "call_1", content: "18 °C, sunny" }] },
    }),
    200,
    "tool results",
);
const result = answered.tool_results?.[0];
check(result?.content === "18 °C, sunny" && result.is_error === false, "the recorded result, typed");
check(answered.token_count > calling.token_count, "the result's tokens counted");
ok(await append({ role: "assistant", content: "18 °C and sunny." }), 201, "append answer");

// Page through the messages with `next`.
const seen: Message[] = [];
let cursor: string | undefined;
do {
    const query = { page_size: 2, ...(cursor === undefined ? {} : { cursor }) };
    const page = ok(
        await api.GET("/api/v1/conversations/{conversation_pk}/messages/", {
            params: { ...inConversation.params, query },
        }),
        200,
        "message page",
    );
    seen.push(...page.results);
    cursor = page.next === null ? undefined : (new URL(page.next).searchParams.get("cursor") ?? undefined);
} while (cursor !== undefined);
check(seen.map((m) => m.id).join() === [question.id, calling.id, seen[2]?.id].join(), "three messages in order");
check(seen.length === 3, "every message once");

// The history, shaped for a model.
const byId = { params: { path: { id: conversation.id } } };
const history = ok(
    await api.GET("/api/v1/conversations/{id}/history/", { params: { ...byId.params, query: { limit: 10 } } }),
    200,
    "history",
);
check(history.format === "openai" && history.messages.length === 4, "the openai format by default");
const assistantCall = history.messages[1];
check(assistantCall !== undefined && assistantCall.role !== "tool", "the assistant's call");
check(assistantCall.tool_calls?.[0]?.function.arguments === call.function.arguments, "history's calls");
const toolMessage = history.messages[2];
check(toolMessage?.role === "tool" && toolMessage.tool_call_id === "call_1", "the call's result follows it");

// Revalidation: the same GET with the ETag answers 304 while nothing changed.
const current = await api.GET("/api/v1/conversations/{id}/", byId);
const etag = current.response.headers.get("ETag");
check(ok(current, 200, "get").message_count === 3 && etag !== null, "a conversation with its ETag");
const revalidated = await api.GET("/api/v1/conversations/{id}/", {
    params: { ...byId.params, header: { "If-None-Match": etag } },
});
check(revalidated.response.status === 304 && revalidated.data === undefined, "304 Not Modified");

const renamed = ok(
    await api.PATCH("/api/v1/conversations/{id}/", { ...byId, body: { title: "Weather" } }),
    200,
    "rename",
);
check(renamed.title === "Weather", "the new title");

// An agent's turn in one transaction: an array in, the array of messages out.
const bergen: ToolCall = { ...call, id: "call_2", function: { ...call.function, arguments: '{"city": "Bergen"}' } };
const turn = ok(
    await append([
        { role: "user", content: "And in Bergen?" },
        {
            role: "assistant",
            content: null,
            tool_calls: [bergen],
            tool_results: [{ tool_call_id: "call_2", content: "9 °C, rain" }],
        },
        { role: "assistant", content: "9 °C and rain in Bergen." },
    ]),
    201,
    "batch append",
);
check(Array.isArray(turn) && turn.length === 3, "the turn's three messages");
check(turn[1]?.tool_results?.[0]?.tool_call_id === "call_2", "the result stored with its call");

// The same history for Anthropic's Messages API: typed content blocks.
const anthropic = ok(
    await api.GET("/api/v1/conversations/{id}/history/", {
        params: { ...byId.params, query: { format: "anthropic", start: "user" } },
    }),
    200,
    "anthropic history",
);
check(anthropic.format === "anthropic" && anthropic.messages[0]?.role === "user", "anthropic, from a user message");
let toolUses = 0;
let toolResults = 0;
for (const block of anthropic.messages.flatMap((message) => message.content)) {
    if (block.type === "tool_use") {
        toolUses += 1;
        check(typeof block.input["city"] === "string", "a tool_use's parsed input");
    } else if (block.type === "tool_result") {
        toolResults += 1;
        check(block.is_error === false && block.content.length > 0, "a tool_result block");
    }
}
check(toolUses === 2 && toolResults === 2, "every call with its result");

// A 400's field errors, read through the generated error type.
const invalid = await append({ role: "user", content: "" });
check(invalid.response.status === 400 && invalid.error !== undefined, "a 400");
const errors = invalid.error;
check(!Array.isArray(errors), "one message's errors, not a batch's");
check("content" in errors, `field errors naming content: ${JSON.stringify(errors)}`);
const contentErrors = errors.content; // a field's messages, or a nested field's errors
check(Array.isArray(contentErrors), "the messages of a plain field");
const firstError = contentErrors[0];
check(typeof firstError === "string" && firstError.length > 0, "a message for content");

// An idempotent replay: the same key and body answer the first message again.
const key = `ts-${Date.now()}`;
const first = await append({ role: "user", content: "Thanks!" }, key);
const again = await append({ role: "user", content: "Thanks!" }, key);
check(single(ok(again, 201, "replay")).id === single(ok(first, 201, "first")).id, "the same message");
check(again.response.headers.get("Idempotent-Replayed") === "true", "Idempotent-Replayed: true");
check(first.response.headers.get("Idempotent-Replayed") === null, "the first answer is no replay");
const reused = await append({ role: "user", content: "Something else" }, key);
check(reused.response.status === 422 && reused.error !== undefined && "detail" in reused.error, "a 422");

// Delete, and it is gone.
const deleted = await api.DELETE("/api/v1/conversations/{id}/", byId);
check(deleted.response.status === 204, "204 on delete");
const gone = await api.GET("/api/v1/conversations/{id}/", byId);
check(gone.response.status === 404 && gone.response.headers.get("X-Request-ID") !== null, "404 after delete");

console.log(`session complete: ${seen.length} messages, conversation ${conversation.id}`);
