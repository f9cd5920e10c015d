// ES module entry point of the pushgate client: import { PushgateClient } from '/pushgate.mjs'.
import './pushgate.js';

const api = globalThis.Pushgate;
export const PushgateClient = api.PushgateClient;
export const wxSocket = api.wxSocket;
export const uniSocket = api.uniSocket;
export const taroSocket = api.taroSocket;
export const backoffDelay = api.backoffDelay;
export const isTerminal = api.isTerminal;
export const SUBPROTOCOL = api.SUBPROTOCOL;
export default api;
