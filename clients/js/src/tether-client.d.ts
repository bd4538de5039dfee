/**
 * The close code, or the one the last error frame names when the close lost it.
 * @param {number | null} code @param {ServerFrame | null} [error]
 * @returns {number | null}
 */
export function effectiveCode(code: number | null, error?: ServerFrame | null): number | null;
/**
 * The client's next step after a close with `code` (null: no close frame at all).
 * @param {number | null} code
 * @param {{error?: ServerFrame | null, reconnect?: boolean, retryAfterMs?: number | null}} [context]
 *   `error`: the `error` frame received just before the close; `reconnect`: whether a
 *   `reconnect` frame was received on this socket; `retryAfterMs`: an explicit wait
 *   (otherwise taken from `error`).
 * @returns {Decision}
 */
export function decide(code: number | null, { error, reconnect, retryAfterMs }?: {
    error?: ServerFrame | null;
    reconnect?: boolean;
    retryAfterMs?: number | null;
}): Decision;
/** A random uuid4 (crypto.randomUUID exists only in secure contexts: plain-http pages lack it). */
export function uuid4(): string;
/** @param {string} clientMsgId @param {string} text */
export function messageFrame(clientMsgId: string, text: string): {
    type: string;
    client_msg_id: string;
    text: string;
};
/** Bytes of a text frame's payload, as the server counts them (UTF-8). @param {string} text */
export function frameSize(text: string): number;
/**
 * A JSON object received from the server (`ready`, `agent.delta`, `error`, ...).
 * @typedef {{type: string, seq?: number, [key: string]: any}} ServerFrame
 */
/**
 * Whether a server frame belongs to the conversation's sequenced history.
 * @param {ServerFrame} frame
 */
export function isSequenced(frame: ServerFrame): boolean;
/**
 * `agent.tool_call`: the agent calls a tool now; `effect` is its class. Its `call_id` never
 * changes across takeovers.
 * @typedef {{type: "agent.tool_call", seq: number, run_id: string, call_id: string, tool: string,
 *   arguments: Record<string, any>, effect: "read" | "idempotent" | "local" | "once"}} ToolCallFrame
 */
/**
 * `agent.tool_result`, exactly one per `call_id`: `ok` with `result` (or `truncated: true`
 * when it was over the server's size cap), else `error`. `unknown`: a `once` call whose outcome
 * was lost (it may or may not have happened); `denied`: never made.
 * @typedef {{type: "agent.tool_result", seq: number, run_id: string, call_id: string,
 *   status: "ok" | "error" | "unknown" | "denied", result?: any, truncated?: boolean, error?: string}} ToolResultFrame
 */
/**
 * `approval.requested`: the run waits for a person's decision on this call (answer with
 * `approve(callId)` / `deny(callId)` from any socket of the conversation). `expires_at`: Unix seconds.
 * @typedef {{type: "approval.requested", seq: number, run_id: string, call_id: string, tool: string,
 *   arguments: Record<string, any>, reason: "policy" | "outcome_unknown", expires_at: number}} ApprovalRequestedFrame
 */
/**
 * `approval.resolved`, exactly one per `approval.requested`; `by`: the answering socket's
 * `client_id`, `timeout`, `admin` or `server`.
 * @typedef {{type: "approval.resolved", seq: number, run_id: string, call_id: string,
 *   decision: "approved" | "denied" | "expired", by: string}} ApprovalResolvedFrame
 */
/** @typedef {"approve" | "deny"} ApprovalDecision */
/**
 * A person's decision on a call waiting for approval.
 * @param {string} callId @param {ApprovalDecision} decision
 */
export function approvalRespondFrame(callId: string, decision: ApprovalDecision): {
    type: string;
    call_id: string;
    decision: ApprovalDecision;
};
/**
 * @param {string} token @param {string | null} conversationId @param {number | null} lastSeq @param {string} clientId
 */
export function connectFrame(token: string, conversationId: string | null, lastSeq: number | null, clientId: string): {
    type: string;
    token: string;
    conversation_id: string | null;
    last_seq: number | null;
    client_id: string;
};
/**
 * The JWT's `exp` (seconds since the epoch), or null if the token is not a readable JWT.
 * @param {string | null | undefined} token @returns {number | null}
 */
export function jwtExpiry(token: string | null | undefined): number | null;
/** @typedef {(input: string, init?: RequestInit) => Promise<Response>} FetchLike */
/** `ws://host:8000/ws/v1/` -> `http://host:8000` (`wss` -> `https`). @param {string} wsUrl */
export function httpBaseFromWs(wsUrl: string): string;
/**
 * `POST /api/auth/token/` -> an access and a refresh token (SimpleJWT).
 * @param {{baseUrl: string, username: string, password: string, fetch?: FetchLike}} args
 * @returns {Promise<{access: string, refresh: string | null}>}
 */
export function obtainToken({ baseUrl, username, password, fetch }: {
    baseUrl: string;
    username: string;
    password: string;
    fetch?: FetchLike;
}): Promise<{
    access: string;
    refresh: string | null;
}>;
/**
 * `POST /api/auth/token/refresh/` -> a new access token (and the rotated refresh token).
 * @param {{baseUrl: string, refresh: string, fetch?: FetchLike}} args
 * @returns {Promise<{access: string, refresh: string}>}
 */
export function refreshAccess({ baseUrl, refresh, fetch }: {
    baseUrl: string;
    refresh: string;
    fetch?: FetchLike;
}): Promise<{
    access: string;
    refresh: string;
}>;
/**
 * `POST /api/auth/logout/`: signs out the sign-in a refresh token belongs to (every token of it
 * is refused from now on, its sockets close with 4401).
 * @param {{baseUrl: string, refresh: string, fetch?: FetchLike}} args
 * @returns {Promise<{signed_out: boolean, sign_in_revoked: boolean}>}
 */
export function signOut({ baseUrl, refresh, fetch }: {
    baseUrl: string;
    refresh: string;
    fetch?: FetchLike;
}): Promise<{
    signed_out: boolean;
    sign_in_revoked: boolean;
}>;
/**
 * `GET /api/realtime/nodes/` -> the live, non-draining nodes.
 * @param {{discoveryUrl: string, access?: string | null, fetch?: FetchLike}} args
 * @returns {Promise<{node: string, wsUrl: string}[]>}
 */
export function fetchNodes({ discoveryUrl, access, fetch }: {
    discoveryUrl: string;
    access?: string | null;
    fetch?: FetchLike;
}): Promise<{
    node: string;
    wsUrl: string;
}[]>;
/**
 * `GET /api/conversations/<id>/events/?after_seq=N`: the kept sequenced frames after N, in order.
 * @param {{baseUrl: string, access: string | null, conversationId: string, afterSeq?: number, fetch?: FetchLike}} args
 * @returns {Promise<ServerFrame[]>}
 */
export function fetchEvents({ baseUrl, access, conversationId, afterSeq, fetch }: {
    baseUrl: string;
    access: string | null;
    conversationId: string;
    afterSeq?: number;
    fetch?: FetchLike;
}): Promise<ServerFrame[]>;
/**
 * `GET /api/conversations/<id>/messages/`: the conversation's messages, oldest first.
 * @param {{baseUrl: string, access: string | null, conversationId: string, fetch?: FetchLike}} args
 * @returns {Promise<{id: string, role: string, text: string, client_msg_id: string | null, seq: number}[]>}
 */
export function fetchMessages({ baseUrl, access, conversationId, fetch }: {
    baseUrl: string;
    access: string | null;
    conversationId: string;
    fetch?: FetchLike;
}): Promise<{
    id: string;
    role: string;
    text: string;
    client_msg_id: string | null;
    seq: number;
}[]>;
/**
 * `GET /api/conversations/`: the user's conversations, most recently updated first.
 * @param {{baseUrl: string, access: string | null, fetch?: FetchLike}} args
 * @returns {Promise<{id: string, title: string, created_at: string, updated_at: string, last_seq: number}[]>}
 */
export function listConversations({ baseUrl, access, fetch }: {
    baseUrl: string;
    access: string | null;
    fetch?: FetchLike;
}): Promise<{
    id: string;
    title: string;
    created_at: string;
    updated_at: string;
    last_seq: number;
}[]>;
/**
 * `POST /api/conversations/`: a new, empty conversation.
 * @param {{baseUrl: string, access: string | null, title?: string, fetch?: FetchLike}} args
 * @returns {Promise<{id: string, title: string, created_at: string, updated_at: string, last_seq: number}>}
 */
export function createConversation({ baseUrl, access, title, fetch }: {
    baseUrl: string;
    access: string | null;
    title?: string;
    fetch?: FetchLike;
}): Promise<{
    id: string;
    title: string;
    created_at: string;
    updated_at: string;
    last_seq: number;
}>;
/**
 * Exponential backoff with full jitter: the delay before retry number `n` (0-based) is
 * uniform in `[0, min(capMs, baseMs * 2**n)]`, which spreads a crowd of clients that lost the
 * same node over the whole window instead of letting them reconnect in lockstep.
 */
export class Backoff {
    /**
     * @param {{baseMs?: number, capMs?: number, maxAttempts?: number | null, random?: () => number}} [options]
     *   `maxAttempts` null: retry forever; `random` returns a number in [0, 1) (inject a seeded
     *   generator for reproducible delays).
     */
    constructor({ baseMs, capMs, maxAttempts, random }?: {
        baseMs?: number;
        capMs?: number;
        maxAttempts?: number | null;
        random?: () => number;
    });
    /** @readonly */ readonly baseMs: number;
    /** @readonly */ readonly capMs: number;
    /** @readonly */ readonly maxAttempts: number | null;
    /** @readonly */ readonly random: () => number;
    /** Upper end of the delay window for retry number `attempt` (0-based). @param {number} attempt */
    bound(attempt: number): number;
    /** A random delay in `[0, bound(attempt)]`. @param {number} attempt */
    delay(attempt: number): number;
    /** Whether retry number `attempt` (0-based) may still be made. @param {number} attempt */
    allows(attempt: number): boolean;
}
/** @typedef {"retry_now" | "retry_after" | "backoff" | "refresh_token" | "drop_message" | "stop"} ActionName */
/** The client's possible next steps after a close. */
export const Action: Readonly<{
    RETRY_NOW: "retry_now";
    RETRY_AFTER: "retry_after";
    BACKOFF: "backoff";
    REFRESH_TOKEN: "refresh_token";
    DROP_MESSAGE: "drop_message";
    STOP: "stop";
}>;
/**
 * @typedef {object} Decision
 * @property {ActionName} action
 * @property {string} reason
 * @property {number} delayMs only for RETRY_AFTER
 * @property {boolean} rotate prefer the next endpoint for the retry
 * @property {boolean} retries whether the client goes on (every action but STOP)
 */
/** @type {ReadonlySet<number>} */
export const GOING_AWAY_CODES: ReadonlySet<number>;
/** Codes after which the client stops, with the reason it reports. @type {Readonly<Record<number, string>>} */
export const STOP_CODES: Readonly<Record<number, string>>;
/** The error `code` sent before each 4xxx close -> the close code it names. @type {Readonly<Record<string, number>>} */
export const ERROR_CODE_CLOSES: Readonly<Record<string, number>>;
/** Closes that mean "a frame this client sent was too large" (4413 from the application, 1009 from the transport). */
export const FRAME_TOO_LARGE_CODES: Set<number>;
/** How a sequenced event relates to what was applied. */
export const Arrival: Readonly<{
    NEXT: "next";
    DUPLICATE: "duplicate";
    GAP: "gap";
}>;
/**
 * @typedef {object} ReadyOutcome
 * @property {string} conversationId
 * @property {boolean} resumed
 * @property {boolean} newConversation the server created the conversation for this connect
 * @property {boolean} reloadRequired `resumed: false` for an existing conversation
 * @property {number} reloadAfterSeq the client's lastSeq before this ready (0 if none)
 * @property {number} serverLastSeq
 * @property {number} replayCount
 */
/** Resume state of one conversation, without I/O. */
export class ResumeState {
    /** @param {string | null} [conversationId] @param {number | null} [lastSeq] */
    constructor(conversationId?: string | null, lastSeq?: number | null);
    /** @type {string | null} */
    conversationId: string | null;
    /** @type {number | null} the highest seq applied (null: nothing yet) */
    lastSeq: number | null;
    /** highest seq sent in a cumulative `ack` */
    ackedSeq: number;
    /** The resume fields of the `connect` frame. */
    connectFields(): {
        conversation_id: string | null;
        last_seq: number | null;
    };
    /**
     * Adopts a `ready` frame answering a `connect` that carried the given fields.
     * @param {ServerFrame} ready @param {string | null} sentConversationId @param {number | null} sentLastSeq
     * @returns {ReadyOutcome}
     */
    onReady(ready: ServerFrame, sentConversationId: string | null, sentLastSeq: number | null): ReadyOutcome;
    /** @param {number} seq @returns {"next" | "duplicate" | "gap"} */
    classify(seq: number): "next" | "duplicate" | "gap";
    /** Records `seq` as applied; it must be the next one. @param {number} seq */
    apply(seq: number): void;
    ackPending(): boolean;
    unackedCount(): number;
    /** @param {number} seq */
    markAcked(seq: number): void;
}
export class Outbox {
    /** An outbox restored from `toJSON()` output; entries that do not look right are skipped. @param {unknown} data */
    static fromJSON(data: unknown): Outbox;
    /** @type {Map<string, PendingMessage>} insertion order = send order */
    items: Map<string, PendingMessage>;
    /**
     * Queues a message; a given id is normalised to lower case and must be a UUID.
     * @param {string} text @param {string} [clientMsgId] @returns {PendingMessage}
     */
    add(text: string, clientMsgId?: string): PendingMessage;
    /** A `message.ack` (`duplicate` or not) arrived: the message is stored server-side. @param {string} clientMsgId */
    ack(clientMsgId: string): PendingMessage | null;
    /** The server refused the message for good (too long, too large): stop resending it. @param {string} clientMsgId */
    discard(clientMsgId: string): PendingMessage | null;
    /** Every unacknowledged message, in the order it was first sent. @returns {PendingMessage[]} */
    pending(): PendingMessage[];
    /** The `message` frames to send after a (re)connect, in order, with the same ids. */
    resendFrames(): {
        type: string;
        client_msg_id: string;
        text: string;
    }[];
    /** @param {string} clientMsgId @returns {PendingMessage | null} */
    get(clientMsgId: string): PendingMessage | null;
    /** @param {string} clientMsgId */
    has(clientMsgId: string): boolean;
    get size(): number;
    /** What storage keeps: `[{clientMsgId, text}, ...]` in send order. */
    toJSON(): PendingMessage[];
    [Symbol.iterator](): ArrayIterator<PendingMessage>;
    #private;
}
/** Sizes of the frames sent on one socket. */
export class SentFrames {
    /** @type {Map<string, number>} client_msg_id -> largest frame sent, in first-sent order */
    messages: Map<string, number>;
    /** the largest frame that was not a `message` */
    largestOther: number;
    /** @param {{type: string, client_msg_id?: unknown}} frame @param {number} size */
    record(frame: {
        type: string;
        client_msg_id?: unknown;
    }, size: number): void;
    /**
     * The `client_msg_id` of the message to drop after a "frame too large" close, or null when
     * no message still pending can be the refused frame.
     * @param {{has(id: string): boolean}} pending the outbox
     * @returns {string | null}
     */
    culprit(pending: {
        has(id: string): boolean;
    }): string | null;
}
/** The server refused or could not run a request; `status` is the HTTP status. */
export class HttpError extends Error {
    /** @param {string} message @param {number} status @param {unknown} body */
    constructor(message: string, status: number, body: unknown);
    status: number;
    body: unknown;
}
/** The client stopped for a reason retrying cannot fix (see the close rules). */
export class TetherError extends Error {
    /** @param {string} message @param {number | null} [code] close code @param {string | null} [errorCode] the server's error `code` */
    constructor(message: string, code?: number | null, errorCode?: string | null);
    code: number | null;
    errorCode: string | null;
}
/** No usable access token: the token was refused and could not be renewed. */
export class AuthError extends TetherError {
}
/**
 * The server refused a message for good (`too_long`, `frame_too_large`, `bad_frame`); it is not
 * resent. `code`: the close code (4413/1009) when the refusal closed the socket.
 */
export class MessageRejected extends TetherError {
    /** @param {string} message @param {string | null} [errorCode] @param {number | null} [code] */
    constructor(message: string, errorCode?: string | null, code?: number | null);
}
/**
 * An async client of one Tether conversation, for browsers and Node 20.
 *
 * Events (`addEventListener(type, e => e.detail)`):
 * - `event`: every sequenced server frame (`message.created`, `agent.started`, `agent.delta`,
 *   `agent.completed`, `agent.failed`, `agent.tool_call`, `agent.tool_result`, `approval.requested`,
 *   `approval.resolved`, ...) exactly once, in seq order;
 * - `state`: {@link StateDetail} on every change (connecting, connected, reconnecting, offline, closed);
 * - `ack`: `{clientMsgId, seq, duplicate}` when the server stored a message;
 * - `rejected`: `{clientMsgId, text, code, detail}` when the server refused a message for good;
 * - `servererror`: `{code, detail, ref, retryAfterMs, decision}` for error frames that keep the socket open;
 * - `reload`: `{conversationId, afterSeq, serverLastSeq}` after `resumed: false`: reload over REST;
 * - `tokens`: `{access, refresh, accessExpiresAt}` whenever the tokens were renewed.
 */
export class TetherClient extends EventTarget {
    /** @param {TetherClientOptions} [options] */
    constructor(options?: TetherClientOptions);
    /** @type {string} */
    clientId: string;
    /** @type {number[]} ms from a lost socket to the next `ready`, one per resume */
    resumeLatencies: number[];
    /** @type {string | null} node id of the current (or last) socket */
    node: string | null;
    /** @type {string | null} */
    endpoint: string | null;
    /**
     * `addEventListener` typed by event: `detail` is `TetherEventMap[type]`.
     * @template {keyof TetherEventMap} K
     * @param {K} type
     * @param {((event: CustomEvent<TetherEventMap[K]>) => void) | EventListenerObject | null} listener
     * @param {boolean | AddEventListenerOptions} [options]
     * @returns {void}
     */
    addEventListener<K extends keyof TetherEventMap>(type: K, listener: ((event: CustomEvent<TetherEventMap[K]>) => void) | EventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
    /**
     * @template {keyof TetherEventMap} K
     * @param {K} type
     * @param {((event: CustomEvent<TetherEventMap[K]>) => void) | EventListenerObject | null} listener
     * @param {boolean | EventListenerOptions} [options]
     * @returns {void}
     */
    removeEventListener<K extends keyof TetherEventMap>(type: K, listener: ((event: CustomEvent<TetherEventMap[K]>) => void) | EventListenerObject | null, options?: boolean | EventListenerOptions): void;
    /**
     * Starts the connection task (idempotent) and resolves once a socket is past `ready`
     * (rejects if the client stops first). It may wait long: offline, backing off.
     * @returns {Promise<void>}
     */
    start(): Promise<void>;
    /**
     * Resolves when a socket is past `ready`; rejects if the client stops first or after `timeoutMs`.
     * @param {{timeoutMs?: number}} [options]
     * @returns {Promise<void>}
     */
    waitConnected({ timeoutMs }?: {
        timeoutMs?: number;
    }): Promise<void>;
    /**
     * Queues a user message and sends it when connected; resolves to its `client_msg_id` once it
     * is queued (and stored, when persistence is on). It is resent with the same id after every
     * reconnect and reload until a `message.ack` arrives. Rejects with MessageRejected when the
     * frame would exceed `maxFrameBytes`.
     * @param {string} text @param {{clientMsgId?: string}} [options] @returns {Promise<string>}
     */
    send(text: string, { clientMsgId }?: {
        clientMsgId?: string;
    }): Promise<string>;
    /**
     * Resolves with `{clientMsgId, seq, duplicate}` when the server stored the message; rejects
     * with MessageRejected if it refused it, TetherError if the client stopped.
     * @param {string} clientMsgId @returns {Promise<{clientMsgId: string, seq: number, duplicate: boolean}>}
     */
    waitAcked(clientMsgId: string): Promise<{
        clientMsgId: string;
        seq: number;
        duplicate: boolean;
    }>;
    /** Asks the server to stop a running agent reply; false when not connected. @param {string} runId */
    cancel(runId: string): Promise<boolean>;
    /**
     * Answers an `approval.requested` ("approve" or "deny"); false when not connected (the
     * approval waits until it expires: answer again once connected). No direct answer: every
     * socket of the conversation gets `approval.resolved` (an `event`) when it is decided. If it
     * cannot be, a `servererror` says why and the socket stays open: `already_decided` (with the
     * `decision` that stands: the first decision wins, from any device) or `not_found`; `ref` is
     * the call id. A decision other than "approve" or "deny" throws a TypeError.
     * @param {string} callId @param {ApprovalDecision} decision @returns {Promise<boolean>}
     */
    respondApproval(callId: string, decision: ApprovalDecision): Promise<boolean>;
    /** `respondApproval(callId, "approve")`: the call is made, the run continues. @param {string} callId */
    approve(callId: string): Promise<boolean>;
    /** `respondApproval(callId, "deny")`: the call is never made (its result is `denied`). @param {string} callId */
    deny(callId: string): Promise<boolean>;
    /** The conversation's messages over REST, oldest first (the reload after a `reload` event). */
    fetchMessages(): Promise<{
        id: string;
        role: string;
        text: string;
        client_msg_id: string | null;
        seq: number;
    }[]>;
    /** The kept sequenced events after `afterSeq` over REST, in order. @param {number} [afterSeq] */
    fetchEvents(afterSeq?: number): Promise<ServerFrame[]>;
    /** Acks what was applied, closes the socket (1000) and stops; the stored state is kept. */
    close(): Promise<void>;
    /**
     * Fault injection (the demo's "Drop connection"): gives up on the current socket at once, as
     * when the network drops it, and recovers by the usual rules.
     */
    drop(): void;
    /**
     * Fault injection (the demo's "Go offline 5 s"): behaves as if the network were gone for
     * `ms`: the socket is declared dead and no connection is attempted before then.
     * @param {number} ms
     */
    goOffline(ms: number): void;
    /** @returns {string | null} */
    get conversationId(): string | null;
    /** Highest seq applied. @returns {number | null} */
    get lastSeq(): number | null;
    /** @returns {ClientState} */
    get state(): ClientState;
    get connected(): boolean;
    get closed(): boolean;
    /** Why the client stopped, when the server stopped it. @returns {TetherError | null} */
    get error(): TetherError | null;
    /** Messages not yet acknowledged by the server, in send order. @returns {PendingMessage[]} */
    get pendingMessages(): PendingMessage[];
    /** @returns {string | null} */
    get accessToken(): string | null;
    /** @returns {string | null} */
    get refreshToken(): string | null;
    /** @returns {string[]} */
    get endpoints(): string[];
    #private;
}
/**
 * A JSON object received from the server (`ready`, `agent.delta`, `error`, ...).
 */
export type ServerFrame = {
    type: string;
    seq?: number;
    [key: string]: any;
};
/**
 * `agent.tool_call`: the agent calls a tool now; `effect` is its class. Its `call_id` never
 * changes across takeovers.
 */
export type ToolCallFrame = {
    type: "agent.tool_call";
    seq: number;
    run_id: string;
    call_id: string;
    tool: string;
    arguments: Record<string, any>;
    effect: "read" | "idempotent" | "local" | "once";
};
/**
 * `agent.tool_result`, exactly one per `call_id`: `ok` with `result` (or `truncated: true`
 * when it was over the server's size cap), else `error`. `unknown`: a `once` call whose outcome
 * was lost (it may or may not have happened); `denied`: never made.
 */
export type ToolResultFrame = {
    type: "agent.tool_result";
    seq: number;
    run_id: string;
    call_id: string;
    status: "ok" | "error" | "unknown" | "denied";
    result?: any;
    truncated?: boolean;
    error?: string;
};
/**
 * `approval.requested`: the run waits for a person's decision on this call (answer with
 * `approve(callId)` / `deny(callId)` from any socket of the conversation). `expires_at`: Unix seconds.
 */
export type ApprovalRequestedFrame = {
    type: "approval.requested";
    seq: number;
    run_id: string;
    call_id: string;
    tool: string;
    arguments: Record<string, any>;
    reason: "policy" | "outcome_unknown";
    expires_at: number;
};
/**
 * `approval.resolved`, exactly one per `approval.requested`; `by`: the answering socket's
 * `client_id`, `timeout`, `admin` or `server`.
 */
export type ApprovalResolvedFrame = {
    type: "approval.resolved";
    seq: number;
    run_id: string;
    call_id: string;
    decision: "approved" | "denied" | "expired";
    by: string;
};
export type ApprovalDecision = "approve" | "deny";
export type FetchLike = (input: string, init?: RequestInit) => Promise<Response>;
export type StorageLike = {
    getItem(key: string): string | null;
    setItem(key: string, value: string): void;
    removeItem(key: string): void;
};
export type ClientState = "idle" | "connecting" | "connected" | "reconnecting" | "offline" | "closed";
/**
 * Detail of a `state` event.
 */
export type StateDetail = {
    state: ClientState;
    /**
     * the node of the current (or last) socket
     */
    node: string | null;
    endpoint: string | null;
    /**
     * retries since the last `ready`
     */
    attempt: number;
    /**
     * reconnecting: wait before the next attempt
     */
    delayMs?: number | null | undefined;
    /**
     * why the socket ended / the client stopped
     */
    reason?: string | null | undefined;
    /**
     * close code of the lost socket
     */
    code?: number | null | undefined;
    /**
     * `code` of the server's error frame before the close
     */
    errorCode?: string | null | undefined;
    /**
     * connected: the server resumed after lastSeq
     */
    resumed?: boolean | undefined;
    /**
     * connected: events replayed before live ones
     */
    replayCount?: number | undefined;
    conversationId?: string | null | undefined;
};
export type AckDetail = {
    clientMsgId: string;
    seq: number;
    duplicate: boolean;
};
export type RejectedDetail = {
    clientMsgId: string;
    text: string;
    code: string;
    detail: string;
    closeCode: number | null;
};
/**
 * An error frame that keeps the socket open. Answers to `respondApproval`: `not_found` (`ref`:
 * the call id) or `already_decided` (`ref`: the call id; `decision`: the one that stands).
 */
export type ServerErrorDetail = {
    code: string;
    detail: string;
    ref: unknown;
    retryAfterMs: number | null;
    decision: "approved" | "denied" | "expired" | null;
};
export type ReloadDetail = {
    conversationId: string;
    afterSeq: number;
    serverLastSeq: number;
};
export type TokensDetail = {
    access: string | null;
    refresh: string | null;
    accessExpiresAt: number | null;
};
/**
 * The `detail` of each event type a TetherClient dispatches.
 */
export type TetherEventMap = {
    /**
     * every sequenced frame, exactly once, in seq order
     */
    event: ServerFrame;
    state: StateDetail;
    ack: AckDetail;
    rejected: RejectedDetail;
    servererror: ServerErrorDetail;
    reload: ReloadDetail;
    tokens: TokensDetail;
};
/**
 * The browser bits the client listens to (`online`/`offline` on the window,
 * `visibilitychange` on the document). Tests pass a fake.
 */
export type BrowserWindow = {
    addEventListener: EventTarget["addEventListener"];
    removeEventListener: EventTarget["removeEventListener"];
    navigator?: {
        onLine?: boolean;
    };
    document?: {
        visibilityState?: string;
        addEventListener: EventTarget["addEventListener"];
        removeEventListener: EventTarget["removeEventListener"];
    };
};
/**
 * Minimal WebSocket interface: the browser's, undici's (Node 22+), or the `ws` package's.
 */
export type WebSocketLike = {
    readonly readyState: number;
    send(data: string): void;
    close(code?: number, reason?: string): void;
    terminate?: () => void;
    onopen: any;
    onmessage: any;
    onclose: any;
    onerror: any;
};
/**
 * Minimal WebSocket interface: the browser's, undici's (Node 22+), or the `ws` package's.
 */
export type WebSocketConstructor = new (url: string) => WebSocketLike;
export type TetherClientOptions = {
    /**
     * WebSocket URLs, tried in order; the next one after a failure
     */
    endpoints?: string | string[] | undefined;
    /**
     * `.../api/realtime/nodes/`; used when `endpoints` is empty or all failed
     */
    discoveryUrl?: string | undefined;
    /**
     * access token
     */
    token?: string | null | undefined;
    /**
     * returns a fresh access token
     */
    tokenProvider?: (() => string | Promise<string>) | null | undefined;
    /**
     * for `auth.refresh` on the socket and the REST refresh after a 4401
     */
    refreshToken?: string | null | undefined;
    /**
     * expiry of `token` in seconds since the epoch (default: read from the JWT)
     */
    accessExpiresAt?: number | null | undefined;
    /**
     * resume this conversation; null: start a new one; undefined: the stored one
     */
    conversationId?: string | null | undefined;
    /**
     * highest seq the application has; undefined: the stored one
     */
    lastSeq?: number | null | undefined;
    /**
     * stable id of this client (default: the stored one, else a uuid4)
     */
    clientId?: string | undefined;
    /**
     * default: `globalThis.WebSocket`
     */
    WebSocket?: WebSocketConstructor | undefined;
    /**
     * default: `sessionStorage` in a browser; null/false: no persistence
     */
    storage?: false | StorageLike | null | undefined;
    /**
     * prefix of the storage keys (default "tether")
     */
    storageKey?: string | undefined;
    backoff?: Backoff | {
        baseMs?: number;
        capMs?: number;
        maxAttempts?: number | null;
        random?: () => number;
    } | undefined;
    /**
     * default: `ready.heartbeat_interval_ms`
     */
    heartbeatIntervalMs?: number | undefined;
    /**
     * silence after which the server is declared dead (default: twice the interval)
     */
    heartbeatTimeoutMs?: number | undefined;
    /**
     * cumulative `ack` after this many applied events (null: never ack)
     */
    ackEvery?: number | null | undefined;
    /**
     * ... or after this long without a new event
     */
    ackIntervalMs?: number | undefined;
    openTimeoutMs?: number | undefined;
    readyTimeoutMs?: number | undefined;
    /**
     * base URL of the REST API (default: from discoveryUrl, else from the endpoint)
     */
    httpBase?: string | undefined;
    fetch?: FetchLike | undefined;
    /**
     * a message whose frame is larger is refused by `send()` (the server's REALTIME_MAX_FRAME_BYTES)
     */
    maxFrameBytes?: number | undefined;
    /**
     * renewals in a row that end in 4401 again before giving up
     */
    maxAuthFailures?: number | undefined;
    /**
     * a socket that lived this long resets the immediate-retry streak
     */
    stableAfterMs?: number | undefined;
    /**
     * default: `globalThis.window`; null: ignore browser events
     */
    window?: BrowserWindow | null | undefined;
};
/**
 * How one socket (or one attempt to open one) ended.
 */
export type SessionEnd = {
    code: number | null;
    reason: string;
    /**
     * the error frame received just before the close
     */
    error?: ServerFrame | null | undefined;
    /**
     * a `reconnect` frame received on this socket
     */
    reconnect?: ServerFrame | null | undefined;
    readySeen?: boolean | undefined;
    /**
     * ms between `ready` and the loss
     */
    lived?: number | undefined;
    /**
     * the client's own verdict (no close code applies)
     */
    local?: Decision | null | undefined;
    lostAt?: number | undefined;
    /**
     * ended by the client itself for a browser reason: no reconnecting report
     */
    quiet?: boolean | undefined;
    /**
     * what was sent on the socket: a "frame too large" names no frame
     */
    sent?: SentFrames | undefined;
};
export type ActionName = "retry_now" | "retry_after" | "backoff" | "refresh_token" | "drop_message" | "stop";
export type Decision = {
    action: ActionName;
    reason: string;
    /**
     * only for RETRY_AFTER
     */
    delayMs: number;
    /**
     * prefer the next endpoint for the retry
     */
    rotate: boolean;
    /**
     * whether the client goes on (every action but STOP)
     */
    retries: boolean;
};
export type ReadyOutcome = {
    conversationId: string;
    resumed: boolean;
    /**
     * the server created the conversation for this connect
     */
    newConversation: boolean;
    /**
     * `resumed: false` for an existing conversation
     */
    reloadRequired: boolean;
    /**
     * the client's lastSeq before this ready (0 if none)
     */
    reloadAfterSeq: number;
    serverLastSeq: number;
    replayCount: number;
};
export type PendingMessage = {
    clientMsgId: string;
    text: string;
};
/**
 * A socket turned into an async queue of what happened to it: `open`, `frame`, `close`, or a
 * `local` end put there by the client (dead server, offline, dropped on purpose).
 */
export type SocketItem = {
    kind: "open";
} | {
    kind: "error";
} | {
    kind: "frame";
    data: any;
} | {
    kind: "close";
    code: number;
    reason: string;
} | {
    kind: "local";
    reason: string;
    decision: Decision;
    quiet: boolean;
};
