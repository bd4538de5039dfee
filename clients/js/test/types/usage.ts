// Compiled (never run) against src/tether-client.d.ts by tests/test_sdk_js_types.py: the
// minimum API of issue 11 type-checks for a TypeScript user, with typed event details.
import {
  Backoff,
  MessageRejected,
  TetherClient,
  decide,
  obtainToken,
  type ApprovalRequestedFrame,
  type ApprovalResolvedFrame,
  type ServerFrame,
  type StateDetail,
  type ToolCallFrame,
  type ToolResultFrame,
} from "../../src/tether-client.js";

export async function usage(token: string, refreshToken: string, WebSocketImpl: typeof WebSocket): Promise<void> {
  const c = new TetherClient({
    endpoints: ["ws://host/ws/v1/"],
    token,
    refreshToken,
    tokenProvider: async () => (await obtainToken({ baseUrl: "http://host", username: "u", password: "p" })).access,
    conversationId: null,
    lastSeq: null,
    clientId: "tab-1",
    WebSocket: WebSocketImpl,
    storage: sessionStorage,
    backoff: new Backoff({ baseMs: 100, capMs: 5000 }),
  });
  c.addEventListener("event", (e) => {
    const frame: ServerFrame = e.detail;
    const seq: number | undefined = frame.seq;
    void seq;
  });
  c.addEventListener("state", (e) => {
    const detail: StateDetail = e.detail;
    const node: string | null = detail.node;
    const state: "idle" | "connecting" | "connected" | "reconnecting" | "offline" | "closed" = detail.state;
    void node;
    void state;
  });
  c.addEventListener("ack", (e) => {
    const duplicate: boolean = e.detail.duplicate;
    void duplicate;
  });
  c.addEventListener("rejected", (e) => void e.detail.clientMsgId);
  // Issue 21: tool steps and approvals are sequenced frames; approve or deny a waiting call.
  c.addEventListener("event", async (e) => {
    const frame: ServerFrame = e.detail;
    if (frame.type === "approval.requested") {
      const asked = frame as ApprovalRequestedFrame;
      const reason: "policy" | "outcome_unknown" = asked.reason;
      const sent: boolean = reason === "policy" ? await c.approve(asked.call_id) : await c.deny(asked.call_id);
      void sent;
    } else if (frame.type === "approval.resolved") {
      const decided = frame as ApprovalResolvedFrame;
      const decision: "approved" | "denied" | "expired" = decided.decision;
      void [decision, decided.by];
    } else if (frame.type === "agent.tool_call") {
      const call = frame as ToolCallFrame;
      const effect: "read" | "idempotent" | "local" | "once" = call.effect;
      void [effect, call.tool, call.arguments];
    } else if (frame.type === "agent.tool_result") {
      const result = frame as ToolResultFrame;
      const status: "ok" | "error" | "unknown" | "denied" = result.status;
      void [status, result.result, result.error];
    }
  });
  c.addEventListener("servererror", (e) => {
    const standing: "approved" | "denied" | "expired" | null = e.detail.decision;
    void standing;
  });
  const answered: boolean = await c.respondApproval("call-id", "deny");
  void answered;
  await c.start();
  const clientMsgId: string = await c.send("text");
  try {
    const ack = await c.waitAcked(clientMsgId);
    const seq: number = ack.seq;
    void seq;
  } catch (err) {
    if (err instanceof MessageRejected) void err.errorCode;
  }
  const stopped: boolean = await c.cancel("run-id");
  void stopped;
  const conversationId: string | null = c.conversationId;
  const lastSeq: number | null = c.lastSeq;
  const node: string | null = c.node;
  const latencies: number[] = c.resumeLatencies;
  void [conversationId, lastSeq, node, latencies];
  c.drop();
  c.goOffline(5000);
  await c.close();
  const action: "retry_now" | "retry_after" | "backoff" | "refresh_token" | "drop_message" | "stop" = decide(4012).action;
  void action;
}
