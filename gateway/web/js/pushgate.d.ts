// Type declarations for pushgate.js / pushgate.mjs.

export type State = 'connecting' | 'connected' | 'disconnected' | 'closed';

/** A message pushed by a backend (an envelope "message" frame). */
export interface PushMessage {
  /** Message id: 26 time-sortable characters. */
  id: string;
  /** The backend's label, "" when none. */
  type: string;
  /** Set for messages published to a topic. */
  topic: string;
  /** The sender's user id, for messages a client published or sent directly; "" for a backend's. */
  from: string;
  /** True for broadcasts to everyone. */
  broadcast: boolean;
  /** True when the message waited in the inbox for an ack (acked automatically unless autoAck is false). */
  stored: boolean;
  /** Server time of the message, Unix milliseconds. */
  ts: number;
  /** The payload: parsed JSON, a string for text, the bytes for binary. */
  data: unknown;
  /** The bytes of a binary payload, else null. */
  binary: Uint8Array | null;
  /** The payload's JSON text exactly as sent (integers above 2^53 intact); null for binary. */
  json: string | null;
}

/** A WebSocket-like object, as made by a socket factory. */
export interface SocketLike {
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}

export type SocketFactory = ((url: string, protocols: string[], headers?: Record<string, string>) => SocketLike) & {
  /** Ask for the envelope format in the URL rather than the subprotocol header. */
  protocolInQuery?: boolean;
};

export interface Options {
  /** Base WebSocket URL, e.g. "wss://push.example.com/ws". */
  url: string;
  /** A token, or a function returning one (called before each connect and to refresh). */
  token?: string | (() => string | Promise<string>);
  /** Development identity, for servers without --auth jwt. */
  userId?: string;
  /** Topics to join at connect (kept across reconnects). */
  topics?: string[];
  /** Acknowledge stored messages after the "message" handlers ran. Default true. */
  autoAck?: boolean;
  /** First reconnect delay cap, ms. Default 500. */
  minDelay?: number;
  /** Largest reconnect delay, ms. Default 30000. */
  maxDelay?: number;
  /** How long a connection must last before the backoff resets, ms. Default 10000. */
  stableAfter?: number;
  /** Makes the socket; default the global WebSocket. */
  socket?: SocketFactory;
  /** Send the token in an Authorization header (socket factories that can). */
  headerToken?: boolean;
  /** Ask for the envelope format with ?protocol=pushgate.v1 instead of the
   * Sec-WebSocket-Protocol header. Default: the socket factory's
   * protocolInQuery (true for uniSocket and taroSocket). */
  protocolInQuery?: boolean;
  /** Random source for the backoff. */
  random?: () => number;
}

export interface Reply {
  op: string;
  ref: number;
  topic?: string;
  /** subscribed, for a topic with history: the epoch of what keeps it. */
  epoch?: string;
  /** subscribed, for a topic with history: the topic's position at the subscription. */
  last_id?: string;
  /** subscribed with a position: messages replayed after the reply. */
  replayed?: number;
  /** subscribed with a position: nothing after it was lost. */
  recovered?: boolean;
  exp?: number;
  /** push_subscribed: the push target's id. */
  target_id?: string;
  /** published: the message's id. */
  id?: string;
}

/** One user subscribed to a topic. */
export interface TopicSubscriber {
  user_id: string;
  /** The user's connections subscribed to the topic, on every node. */
  connections: number;
}

/** The reply to presence(): one page of a topic's subscribers. */
export interface PresenceReply extends Reply {
  op: 'presence';
  topic: string;
  /** Ordered by user id (byte order). */
  users: TopicSubscriber[];
  total_users: number;
  total_connections: number;
  /** Pass as opts.after for the next page; absent on the last page. */
  next?: string;
}

export interface EventMap {
  message: PushMessage;
  state: State;
  /** After a resume: of the user's inbox (no topic), or of a topic with history (topic set). */
  recovered: { recovered: boolean; replayed: number; topic?: string };
  hello: Record<string, unknown>;
  error: Error & { code?: string };
  close: { code: number; reason: string; willReconnect: boolean };
  reconnecting: { attempt: number; delay: number };
  /** A user's first connection subscribed to a topic this page is subscribed to
   * (only for topics matching the server's --topic-presence-events). */
  join: { topic: string; userId: string };
  /** A user's last subscribed connection left such a topic. */
  leave: { topic: string; userId: string };
}

export class PushgateClient {
  constructor(options: Options);
  readonly state: State;
  /** Id of the last personal message received: the resume point. */
  lastId: string;
  /** The server's inbox epoch, sent back on resume. */
  epoch: string;
  /** Per topic with history: where it resumes after a reconnect (kept automatically). */
  topicPositions: Record<string, { lastId: string; epoch: string }>;
  /** The user the server says this is (after hello). */
  userId?: string;
  /** This connection's id (after hello; new on every reconnect): give it to
   * your backend so that its Publish or Broadcast can leave this page out
   * (exclude_connection_ids). */
  connId?: string;
  connect(): this;
  close(): void;
  on<K extends keyof EventMap>(event: K, fn: (arg: EventMap[K]) => void): this;
  off<K extends keyof EventMap>(event: K, fn: (arg: EventMap[K]) => void): this;
  subscribe(topic: string): Promise<Reply>;
  unsubscribe(topic: string): Promise<Reply>;
  send(data: unknown, opts?: { type?: string; topic?: string }): Promise<Reply>;
  /** Publishes to everyone subscribed to topic (token "pub" claim or server pattern); resolves with {op: "published", id}. */
  publish(topic: string, data: unknown, opts?: { type?: string; excludeSender?: boolean }): Promise<Reply>;
  /** Sends to every connection of userId, live only (token "dm" claim or server pattern); resolves with {op: "published", id}. */
  direct(userId: string, data: unknown, opts?: { type?: string }): Promise<Reply>;
  /** Who is subscribed to topic, a page at a time (token "presence" claim or server pattern). */
  presence(topic: string, opts?: { limit?: number; after?: string }): Promise<PresenceReply>;
  ack(ids: string | string[]): void;
  /**
   * Registers the served service worker, subscribes to Web Push with the
   * server's VAPID key and hands the subscription over; resolves with
   * {op: "push_subscribed", target_id}.
   */
  enablePush(opts?: { serviceWorker?: string; keyUrl?: string }): Promise<Reply>;
}

/** Adapts the WeChat mini-program `wx` API to the socket option. */
export function wxSocket(wx: unknown): SocketFactory;
/** Adapts uni-app's `uni` API (envelope format asked for in the URL). */
export function uniSocket(uni: unknown): SocketFactory;
/** Adapts Taro (`@tarojs/taro`) (envelope format asked for in the URL). */
export function taroSocket(Taro: unknown): SocketFactory;
/** The reconnect delay before attempt n: full jitter, capped. */
export function backoffDelay(attempt: number, minDelay: number, maxDelay: number, random?: () => number): number;
/** Whether a close code means "do not reconnect". */
export function isTerminal(code: number): boolean;
export const SUBPROTOCOL: 'pushgate.v1';

declare const Pushgate: {
  PushgateClient: typeof PushgateClient;
  wxSocket: typeof wxSocket;
  uniSocket: typeof uniSocket;
  taroSocket: typeof taroSocket;
  backoffDelay: typeof backoffDelay;
  isTerminal: typeof isTerminal;
  SUBPROTOCOL: typeof SUBPROTOCOL;
};
export default Pushgate;
