// The conversations of this console session. The API continues a session's latest conversation,
// so each new conversation is a new server session (no session_id sent: the server makes one);
// erasing this console session erases each of them. Their ids live in sessionStorage (the tab's
// lifetime), the turns' texts in memory only.

const STORAGE = "lea-console-conversations";

export class ConsoleSession {
  constructor() {
    let saved = [];
    try {
      saved = JSON.parse(sessionStorage.getItem(STORAGE) || "[]");
    } catch {
      saved = [];
    }
    /** @type {{sessionId: string, conversationId: number, turns: {asked: string, answer: string}[]}[]} */
    this.conversations = saved.map((c) => ({ sessionId: c.sessionId, conversationId: c.conversationId, turns: [] }));
    this.current = this.conversations.at(-1) || null;
  }

  /** The fields a turn sends to continue the current conversation (none: a new one). */
  continuing() {
    if (!this.current) return {};
    return { session_id: this.current.sessionId, conversation_id: this.current.conversationId };
  }

  /** A finished turn (from its `done` event). */
  record(done, asked) {
    let conversation = this.conversations.find(
      (c) => c.sessionId === done.session_id && c.conversationId === done.conversation_id,
    );
    if (!conversation) {
      conversation = { sessionId: done.session_id, conversationId: done.conversation_id, turns: [] };
      this.conversations.push(conversation);
    }
    conversation.turns.push({ asked, answer: done.response });
    this.current = conversation;
    this.save();
  }

  startNew() {
    this.current = null;
  }

  sessionIds() {
    return [...new Set(this.conversations.map((c) => c.sessionId))];
  }

  clear() {
    this.conversations = [];
    this.current = null;
    sessionStorage.removeItem(STORAGE);
  }

  save() {
    const ids = this.conversations.map((c) => ({ sessionId: c.sessionId, conversationId: c.conversationId }));
    sessionStorage.setItem(STORAGE, JSON.stringify(ids));
  }
}
