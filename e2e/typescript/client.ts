// A whole chat session through a client generated from the live /api/schema/ (openapi-typescript
// types, openapi-fetch calls), compiled with `tsc --strict`: every success body is read with
// the generated types alone, no `any` and no cast. Run by e2e/test_typescript_client.py as
// `node build/client.js <base url>`; any failed expectation throws and exits non-zero.
import createClient from "openapi-fetch";
import type { components, paths } from "./schema.js";

type Message = components["schemas"]["Message"];
type ToolCall = components["schemas"]["ToolCall"];

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

async function append(body: components["schemas"]["MessageCreateRequest"], key?: string) {
    const params = { ...inConversation.params, header: key === undefined ? {} : { "Idempotency-Key": key } };
    return api.POST("/api/v1/conversations/{conversation_pk}/messages/", { params, body });
}

const question = ok(await append({ role: "user", content: "What is the weather in Paris?" }), 201, "append");
check(question.role === "user" && question.tool_calls === null, "a user message without calls");
const call: ToolCall = {
    id: "call_1",
    type: "function",
    function: { name: "get_weather", arguments: '{"city": "Paris"}' },
};
const calling = ok(await append({ role: "assistant", content: null, tool_calls: [call] }), 201, "append calls");
const stored = calling.tool_calls?.[0];
check(stored?.function.name === "get_weather" && stored.type === "function", "the stored tool call, typed");
check(calling.content === null, "an assistant message with calls only");
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
check(history.messages[1]?.tool_calls?.[0]?.function.arguments === call.function.arguments, "history's calls");

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

// A 400's field errors, read through the generated error type.
const invalid = await append({ role: "user", content: "" });
check(invalid.response.status === 400 && invalid.error !== undefined, "a 400");
const errors = invalid.error;
check("content" in errors, `field errors naming content: ${JSON.stringify(errors)}`);
const contentErrors = errors.content; // a field's messages, or a nested field's errors
check(Array.isArray(contentErrors), "the messages of a plain field");
const firstError = contentErrors[0];
check(typeof firstError === "string" && firstError.length > 0, "a message for content");

// An idempotent replay: the same key and body answer the first message again.
const key = `ts-${Date.now()}`;
const first = await append({ role: "user", content: "Thanks!" }, key);
const again = await append({ role: "user", content: "Thanks!" }, key);
check(ok(again, 201, "replay").id === ok(first, 201, "first").id, "the same message");
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
