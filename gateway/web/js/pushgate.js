/*
 * pushgate.js: the client for pushgate's envelope protocol (PROTOCOL.md).
 *
 * It connects with a token (or a development user id), reconnects with
 * exponential backoff and full jitter, stops on "do not reconnect" close
 * codes, detects dead links with its own heartbeat, resumes after the last
 * message it received, acknowledges messages, keeps topic subscriptions
 * across reconnects, and holds sends made while it is connecting.
 *
 * Load it as a plain script (it defines the global `Pushgate`), require() it
 * in Node or a mini-program, or import pushgate.mjs as an ES module.
 */
(function (root, factory) {
  'use strict';
  var api = factory();
  if (typeof module === 'object' && module && module.exports) {
    module.exports = api;
  }
  if (root) {
    root.Pushgate = api;
  }
})(typeof globalThis !== 'undefined' ? globalThis : typeof self !== 'undefined' ? self : this, function () {
  'use strict';

  var SUBPROTOCOL = 'pushgate.v1';

  // Close codes after which reconnecting cannot help (PROTOCOL.md §12).
  function isTerminal(code) {
    return code === 1007 || code === 1009 || (code >= 4100 && code <= 4199);
  }

  // backoffDelay returns the wait before reconnect attempt n (0-based):
  // a random time in [0, min(max, min * 2^n)] ("full jitter"), never less
  // than a tenth of min so a crowd does not all retry at once at zero.
  function backoffDelay(attempt, minDelay, maxDelay, random) {
    var cap = Math.min(maxDelay, minDelay * Math.pow(2, attempt));
    var r = (random || Math.random)();
    return Math.max(minDelay / 10, Math.floor(r * cap));
  }

  function base64ToBytes(s) {
    if (typeof atob === 'function') {
      var bin = atob(s);
      var out = new Uint8Array(bin.length);
      for (var i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
      return out;
    }
    return new Uint8Array(Buffer.from(s, 'base64')); // Node without atob
  }

  // A JWT's exp claim in milliseconds, or 0.
  function tokenExpiry(token) {
    try {
      var part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
      while (part.length % 4) part += '=';
      var text = typeof atob === 'function' ? atob(part) : Buffer.from(part, 'base64').toString('binary');
      var exp = JSON.parse(text).exp;
      return typeof exp === 'number' ? exp * 1000 : 0;
    } catch (e) {
      return 0;
    }
  }

  /**
   * PushgateClient connects to pushgate and delivers its messages.
   *
   * options:
   *   url         base WebSocket URL, e.g. "wss://push.example.com/ws" (required)
   *   token       a token string, or a function returning one (or a Promise
   *               of one); called again before each reconnect and to refresh
   *   userId      development identity (servers without --auth jwt)
   *   topics      topics to join at connect
   *   autoAck     acknowledge stored messages after the "message" handlers ran (default true)
   *   minDelay    first reconnect delay cap in ms (default 500)
   *   maxDelay    largest reconnect delay in ms (default 30000)
   *   stableAfter ms a connection must last before the backoff resets (default 10000)
   *   socket      function (url, protocols, headers) returning a WebSocket-like
   *               object; default: the global WebSocket. See wxSocket for mini-programs.
   *   headerToken send the token in an Authorization header instead of the URL
   *               (only for socket factories that can set headers)
   *   protocolInQuery ask for the envelope format with ?protocol=pushgate.v1
   *               instead of the Sec-WebSocket-Protocol header (default: what
   *               the socket factory says; uniSocket and taroSocket say true)
   *   random      random source for the backoff (tests)
   *
   * Events (client.on(name, fn)):
   *   message    {id, type, topic, broadcast, stored, ts, data, json, binary}
   *              (json: the payload's JSON text, exactly as sent, when it is JSON
   *              or text; JSON.parse rounds integers above 2^53)
   *   state      "connecting" | "connected" | "disconnected" | "closed"
   *   recovered  {recovered, replayed} after a resume of the user's inbox;
   *              {recovered, replayed, topic} after one of a topic with history
   *   hello      the server's hello frame
   *   error      an Error (network errors, refused frames, bad token)
   *   close      {code, reason, willReconnect}
   */
  function PushgateClient(options) {
    if (!options || !options.url) throw new Error('pushgate: options.url is required');
    this.options = options;
    this.url = options.url.replace(/\/+$/, '');
    this.minDelay = options.minDelay || 500;
    this.maxDelay = options.maxDelay || 30000;
    this.stableAfter = options.stableAfter === undefined ? 10000 : options.stableAfter;
    this.autoAck = options.autoAck !== false;
    this.state = 'disconnected';
    this.lastId = '';
    this.epoch = '';
    this.topics = {};
    // Topics with history (the server's subscribed frame has an epoch):
    // topic -> {lastId, epoch}, the position to resume it from.
    this.topicPositions = {};
    (options.topics || []).forEach(function (t) { this.topics[t] = true; }, this);
    this._handlers = {};
    this._pending = []; // frames sent while not connected
    this._waiting = {}; // ref -> {resolve, reject}
    this._ref = 0;
    this._attempt = 0;
    this._ws = null;
    this._stopped = true;
    this._timers = {};
  }

  PushgateClient.prototype.on = function (event, fn) {
    (this._handlers[event] = this._handlers[event] || []).push(fn);
    return this;
  };

  PushgateClient.prototype.off = function (event, fn) {
    var list = this._handlers[event] || [];
    var i = list.indexOf(fn);
    if (i >= 0) list.splice(i, 1);
    return this;
  };

  PushgateClient.prototype._emit = function (event, arg) {
    (this._handlers[event] || []).slice().forEach(function (fn) {
      try {
        fn(arg);
      } catch (e) {
        if (event !== 'error') this._emit('error', e);
      }
    }, this);
  };

  PushgateClient.prototype._setState = function (s) {
    if (this.state === s) return;
    this.state = s;
    this._emit('state', s);
  };

  PushgateClient.prototype._timer = function (name, ms, fn) {
    this._clear(name);
    var self = this;
    this._timers[name] = setTimeout(function () {
      delete self._timers[name];
      fn.call(self);
    }, ms);
  };

  PushgateClient.prototype._clear = function (name) {
    if (this._timers[name]) {
      clearTimeout(this._timers[name]);
      delete this._timers[name];
    }
  };

  /** connect opens the connection (and keeps it open until close()). */
  PushgateClient.prototype.connect = function () {
    if (!this._stopped) return this;
    this._stopped = false;
    this._open();
    return this;
  };

  PushgateClient.prototype._token = function () {
    var t = this.options.token;
    return Promise.resolve(typeof t === 'function' ? t() : t);
  };

  PushgateClient.prototype._open = function () {
    var self = this;
    this._setState('connecting');
    this._token().then(function (token) {
      if (self._stopped) return;
      self._currentToken = token || '';
      var url = self.url + (self.options.userId ? '/' + encodeURIComponent(self.options.userId) : '');
      var q = [];
      var inQuery = self.options.protocolInQuery !== undefined ? !!self.options.protocolInQuery
        : !!(self.options.socket && self.options.socket.protocolInQuery);
      if (inQuery) q.push('protocol=' + SUBPROTOCOL);
      if (token && !self.options.headerToken) q.push('token=' + encodeURIComponent(token));
      if (self.lastId) {
        q.push('last_id=' + encodeURIComponent(self.lastId));
        if (self.epoch) q.push('epoch=' + encodeURIComponent(self.epoch));
      }
      var topics = Object.keys(self.topics);
      if (topics.length) q.push('topics=' + topics.map(encodeURIComponent).join(','));
      var positions = topics.filter(function (t) {
        return self.topicPositions[t] && self.topicPositions[t].lastId;
      }).map(function (t) {
        var p = self.topicPositions[t];
        return t + '=' + p.lastId + (p.epoch ? '.' + p.epoch : '');
      });
      if (positions.length) q.push('topic_last_ids=' + encodeURIComponent(positions.join(',')));
      if (q.length) url += (url.indexOf('?') < 0 ? '?' : '&') + q.join('&');
      var headers = token && self.options.headerToken ? { Authorization: 'Bearer ' + token } : undefined;
      var ws;
      try {
        var protocols = inQuery ? [] : [SUBPROTOCOL];
        ws = self.options.socket ? self.options.socket(url, protocols, headers) : new WebSocket(url, protocols);
      } catch (e) {
        self._emit('error', e);
        self._scheduleReconnect();
        return;
      }
      self._ws = ws;
      self._openedAt = 0;
      ws.onopen = function () {
        if (self._ws !== ws) return;
        self._openedAt = Date.now();
      };
      ws.onmessage = function (ev) {
        if (self._ws !== ws) return;
        self._onFrame(ev.data);
      };
      ws.onerror = function () {
        if (self._ws !== ws) return;
        self._emit('error', new Error('pushgate: connection error'));
      };
      ws.onclose = function (ev) {
        if (self._ws !== ws) return;
        self._onClose(ev.code || 1006, ev.reason || '');
      };
    }, function (err) {
      self._emit('error', err);
      self._scheduleReconnect();
    });
  };

  PushgateClient.prototype._onFrame = function (data) {
    if (typeof data !== 'string') return; // the envelope protocol is text only
    this._alive();
    var lines = data.split('\n');
    var acks = [];
    for (var i = 0; i < lines.length; i++) {
      var f;
      try {
        f = JSON.parse(lines[i]);
      } catch (e) {
        this._emit('error', new Error('pushgate: unreadable frame'));
        continue;
      }
      this._onEnvelope(f, acks, lines[i]);
    }
    if (acks.length) this._sendNow({ op: 'ack', ids: acks });
  };

  PushgateClient.prototype._onEnvelope = function (f, acks, line) {
    switch (f.op) {
      case 'hello':
        this._onHello(f);
        break;
      case 'message':
        var msg = {
          id: f.id, type: f.type || '', topic: f.topic || '', from: f.from || '', broadcast: !!f.broadcast,
          stored: !!f.stored, ts: f.ts, data: f.data, binary: null, json: null,
        };
        // The payload's JSON text as sent (data is the last field of a
        // non-binary envelope), for numbers JSON.parse would round, such as
        // 64-bit order ids.
        if (f.encoding !== 'base64' && line) {
          var at = line.indexOf(',"data":');
          if (at >= 0) msg.json = line.slice(at + 8, -1);
        }
        if (f.encoding === 'base64') {
          msg.binary = base64ToBytes(f.data);
          msg.data = msg.binary;
        }
        if (!f.topic && !f.broadcast) this.lastId = f.id; // the resume point
        var pos = f.topic && this.topicPositions[f.topic];
        if (pos && f.id > pos.lastId) pos.lastId = f.id; // the topic's resume point
        this._emit('message', msg);
        if (f.stored && this.autoAck) acks.push(f.id);
        break;
      case 'pong':
        break;
      case 'join':
      case 'leave':
        // A user's first subscription to a topic this page is subscribed
        // to, or its last one, on a topic the server reports joins and
        // leaves of (--topic-presence-events).
        this._emit(f.op, { topic: f.topic, userId: f.user_id });
        break;
      case 'error':
        var err = new Error('pushgate: ' + f.code + ': ' + f.message);
        err.code = f.code;
        if (f.ref !== undefined && this._waiting[f.ref]) {
          this._waiting[f.ref].reject(err);
          delete this._waiting[f.ref];
        } else {
          this._emit('error', err);
        }
        break;
      default: // subscribed, unsubscribed, sent, published, acked, refreshed, presence
        if (f.op === 'unsubscribed' && f.ref === undefined && f.topic) {
          delete this.topics[f.topic]; // ended by the server (a refreshed token no longer allows it)
          delete this.topicPositions[f.topic];
        }
        if (f.op === 'subscribed' && f.topic && f.epoch) this._onTopicJoined(f);
        if (f.ref !== undefined && this._waiting[f.ref]) {
          this._waiting[f.ref].resolve(f);
          delete this._waiting[f.ref];
        }
    }
  };

  // _onTopicJoined keeps the position of a topic with history: the
  // server's last id at the subscription, or a later one of ours.
  PushgateClient.prototype._onTopicJoined = function (f) {
    var pos = this.topicPositions[f.topic] || { lastId: '', epoch: '' };
    if (f.epoch !== pos.epoch && pos.epoch) pos.lastId = ''; // ids of a lost history
    pos.epoch = f.epoch;
    if (f.last_id && f.last_id > pos.lastId) pos.lastId = f.last_id;
    this.topicPositions[f.topic] = pos;
    if (f.recovered !== undefined) {
      this._emit('recovered', { recovered: f.recovered !== false, replayed: f.replayed || 0, topic: f.topic });
    }
  };

  // _subscribeFrame is the subscribe op for topic, after its position when
  // it has one.
  PushgateClient.prototype._subscribeFrame = function (topic) {
    var frame = { op: 'subscribe', topic: topic };
    var pos = this.topicPositions[topic];
    if (pos && pos.lastId) {
      frame.last_id = pos.lastId;
      if (pos.epoch) frame.epoch = pos.epoch;
    }
    return frame;
  };

  PushgateClient.prototype._onHello = function (f) {
    var resumed = !!this.lastId;
    this.epoch = f.epoch || '';
    this.connId = f.conn_id;
    this.userId = f.user_id;
    this._heartbeat = f.heartbeat || { interval_ms: 25000, timeout_ms: 10000 };
    this._setState('connected');
    this._emit('hello', f);
    if (resumed) this._emit('recovered', { recovered: f.recovered !== false, replayed: f.replayed });
    // Topics joined since the URL was built, then what was sent meanwhile.
    var joined = {};
    (f.topics || []).forEach(function (t) { joined[t] = true; });
    this._pending.forEach(function (frame) {
      if (frame.op === 'subscribe') joined[frame.topic] = true; // goes out below
    });
    Object.keys(this.topics).forEach(function (t) {
      if (!joined[t]) this._sendNow(this._subscribeFrame(t));
    }, this);
    var pending = this._pending;
    this._pending = [];
    pending.forEach(function (frame) { this._sendNow(frame); }, this);
    this._ping();
    this._scheduleRefresh();
    if (this.stableAfter >= 0) {
      this._timer('stable', this.stableAfter, function () { this._attempt = 0; });
    }
  };

  // Heartbeat: a ping every interval; a link that shows no frame within the
  // timeout after it is dead (the browser may not notice for minutes).
  PushgateClient.prototype._ping = function () {
    var hb = this._heartbeat;
    this._timer('ping', hb.interval_ms, function () {
      this._sendNow({ op: 'ping' }, true);
      this._timer('dead', hb.timeout_ms, function () {
        this._emit('error', new Error('pushgate: no answer to ping; reconnecting'));
        this._drop();
      });
      this._ping();
    });
  };

  PushgateClient.prototype._alive = function () {
    this._clear('dead');
  };

  // refresh hands the server a new token shortly before the current one
  // expires, when the token comes from a function.
  PushgateClient.prototype._scheduleRefresh = function () {
    if (typeof this.options.token !== 'function') return;
    var exp = tokenExpiry(this._currentToken || '');
    if (!exp) return;
    var wait = Math.max(1000, exp - Date.now() - 30000);
    this._timer('refresh', wait, function () {
      var self = this;
      this._token().then(function (token) {
        self._currentToken = token;
        return self._request({ op: 'refresh', token: token });
      }).then(function () { self._scheduleRefresh(); }, function (e) { self._emit('error', e); });
    });
  };

  PushgateClient.prototype._drop = function () {
    var ws = this._ws;
    if (!ws) return;
    this._ws = null;
    try {
      ws.close(4000, 'client: dead link');
    } catch (e) { /* already closed */ }
    this._onClose(1006, 'dead link', true);
  };

  PushgateClient.prototype._onClose = function (code, reason, alreadyDetached) {
    if (!alreadyDetached) this._ws = null;
    ['ping', 'dead', 'stable', 'refresh'].forEach(this._clear, this);
    // Ops sent but not answered go out again after the reconnect.
    Object.keys(this._waiting).forEach(function (ref) {
      var w = this._waiting[ref];
      if (w.sent) {
        w.sent = false;
        this._pending.push(w.frame);
      }
    }, this);
    var token = typeof this.options.token === 'function';
    var terminal = isTerminal(code) && !(code === 4101 && token); // a provider can mint a new token
    var willReconnect = !this._stopped && !terminal;
    this._emit('close', { code: code, reason: reason, willReconnect: willReconnect });
    if (willReconnect && this._stopped) return; // a close handler called close()
    if (willReconnect) {
      this._setState('disconnected');
      this._scheduleReconnect();
    } else {
      this._stopped = true;
      this._failWaiting(new Error('pushgate: connection closed (' + code + ')'));
      this._setState('closed');
    }
  };

  PushgateClient.prototype._failWaiting = function (err) {
    var waiting = this._waiting;
    this._waiting = {};
    this._pending = [];
    Object.keys(waiting).forEach(function (ref) { waiting[ref].reject(err); });
  };

  PushgateClient.prototype._scheduleReconnect = function () {
    if (this._stopped) return;
    this._setState('disconnected');
    var delay = backoffDelay(this._attempt++, this.minDelay, this.maxDelay, this.options.random);
    this._emit('reconnecting', { attempt: this._attempt, delay: delay });
    this._timer('reconnect', delay, this._open);
  };

  PushgateClient.prototype._sendNow = function (frame, dropIfOffline) {
    var ws = this._ws;
    if (this.state !== 'connected' || !ws) {
      if (!dropIfOffline) this._pending.push(frame);
      return;
    }
    try {
      ws.send(JSON.stringify(frame));
      var w = frame.ref !== undefined && this._waiting[frame.ref];
      if (w) w.sent = true;
    } catch (e) {
      if (!dropIfOffline) this._pending.push(frame);
    }
  };

  // _request sends an op with a ref and resolves with the server's reply.
  PushgateClient.prototype._request = function (frame) {
    var self = this;
    frame.ref = ++this._ref;
    return new Promise(function (resolve, reject) {
      self._waiting[frame.ref] = { resolve: resolve, reject: reject, frame: frame, sent: false };
      self._sendNow(frame);
    });
  };

  /** subscribe joins a topic now and after every reconnect. */
  PushgateClient.prototype.subscribe = function (topic) {
    var self = this;
    this.topics[topic] = true;
    return this._request(this._subscribeFrame(topic)).catch(function (e) {
      delete self.topics[topic];
      throw e;
    });
  };

  /** unsubscribe leaves a topic. */
  PushgateClient.prototype.unsubscribe = function (topic) {
    delete this.topics[topic];
    delete this.topicPositions[topic];
    return this._request({ op: 'unsubscribe', topic: topic });
  };

  /** send passes data upstream to the backend (when the server allows it). */
  PushgateClient.prototype.send = function (data, opts) {
    var frame = { op: 'send', data: data };
    if (opts && opts.type) frame.type = opts.type;
    if (opts && opts.topic) frame.topic = opts.topic;
    return this._request(frame);
  };

  /**
   * publish sends data to everyone subscribed to topic, when the token's
   * "pub" claim or the server allows it (PROTOCOL.md, "publish"). Options:
   * type, excludeSender (this connection does not get its own message).
   * It resolves with the server's reply ({op: "published", id}); refused
   * ones reject with an Error whose code is "forbidden".
   */
  PushgateClient.prototype.publish = function (topic, data, opts) {
    var frame = { op: 'publish', topic: topic, data: data };
    if (opts && opts.type) frame.type = opts.type;
    if (opts && opts.excludeSender) frame.exclude_sender = true;
    return this._request(frame);
  };

  /**
   * direct sends data to every connection of userId, when the token's "dm"
   * claim or the server allows it (PROTOCOL.md, "direct"): live only.
   * Options: type. Resolves with {op: "published", id}.
   */
  PushgateClient.prototype.direct = function (userId, data, opts) {
    var frame = { op: 'direct', user_id: userId, data: data };
    if (opts && opts.type) frame.type = opts.type;
    return this._request(frame);
  };

  /**
   * presence reads who is subscribed to topic, on every node (PROTOCOL.md,
   * "presence"), when the token's "presence" claim or the server allows
   * it. Options: limit (users per page, 1 to 1000, default 100), after (the
   * previous page's next). It resolves with {op: "presence", topic, users:
   * [{user_id, connections}], total_users, total_connections, next} (next
   * only when more users follow); refused ones reject with an Error whose
   * code is "forbidden".
   */
  PushgateClient.prototype.presence = function (topic, opts) {
    var frame = { op: 'presence', topic: topic };
    if (opts && opts.limit) frame.limit = opts.limit;
    if (opts && opts.after) frame.after = opts.after;
    return this._request(frame);
  };

  /**
   * enablePush lets the server notify this user while no page is open
   * (docs/offline-push.md): it registers the served service worker, asks
   * the browser for a push subscription with the server's VAPID key (the
   * browser may ask the user for permission), and hands the subscription
   * over ("push_subscribe"). It resolves with the server's reply
   * ({op: "push_subscribed", target_id}). Options: serviceWorker (URL of
   * the worker, default "/pushgate-sw.js"), keyUrl (default
   * "/push/vapid-public-key"), both on the page's origin.
   */
  PushgateClient.prototype.enablePush = function (opts) {
    var self = this;
    var sw = (opts && opts.serviceWorker) || '/pushgate-sw.js';
    var keyUrl = (opts && opts.keyUrl) || '/push/vapid-public-key';
    if (typeof navigator === 'undefined' || !navigator.serviceWorker || typeof PushManager === 'undefined') {
      return Promise.reject(new Error('pushgate: this browser has no Web Push (service workers need https or localhost)'));
    }
    return navigator.serviceWorker.register(sw).then(function () {
      return navigator.serviceWorker.ready;
    }).then(function (reg) {
      return fetch(keyUrl).then(function (r) {
        if (!r.ok) throw new Error('pushgate: no VAPID key at ' + keyUrl + ' (HTTP ' + r.status + '): Web Push is not set up on the server');
        return r.text();
      }).then(function (key) {
        return reg.pushManager.getSubscription().then(function (sub) {
          return sub || reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key.trim() });
        });
      });
    }).then(function (sub) {
      return self._request({ op: 'push_subscribe', subscription: sub.toJSON() });
    });
  };

  /** ack acknowledges messages by id (when autoAck is false). */
  PushgateClient.prototype.ack = function (ids) {
    this._sendNow({ op: 'ack', ids: [].concat(ids) });
  };

  /** close stops the client; it will not reconnect. */
  PushgateClient.prototype.close = function () {
    this._stopped = true;
    Object.keys(this._timers).forEach(this._clear, this);
    var ws = this._ws;
    this._ws = null;
    if (ws) {
      try {
        ws.close(1000, 'client closed');
      } catch (e) { /* already closed */ }
    }
    this._failWaiting(new Error('pushgate: client closed'));
    this._setState('closed');
  };

  /**
   * taskSocket turns a mini-program style socket API into the socket
   * option. open(options) takes {url, header, protocols} and returns a
   * SocketTask (onOpen, onMessage, onClose, onError, send({data}),
   * close({code, reason})) or a Promise of one (Taro).
   */
  function taskSocket(open) {
    return function (url, protocols, headers) {
      var sock = { readyState: 0, onopen: null, onmessage: null, onclose: null, onerror: null };
      var task = null;
      var closed = false;
      var pendingClose = null;
      function ended(code, reason) {
        if (closed) return;
        closed = true;
        sock.readyState = 3;
        if (sock.onclose) sock.onclose({ code: code || 1006, reason: reason || '' });
      }
      function bind(t) {
        task = t;
        t.onOpen(function () {
          if (closed) return;
          sock.readyState = 1;
          if (sock.onopen) sock.onopen({});
        });
        t.onMessage(function (res) {
          if (sock.onmessage) sock.onmessage({ data: res.data });
        });
        t.onError(function (err) {
          if (sock.onerror) sock.onerror(err || {});
        });
        t.onClose(function (res) {
          ended(res && res.code, res && res.reason);
        });
        if (pendingClose) t.close(pendingClose);
      }
      var opts = { url: url, header: headers || {} };
      if (protocols && protocols.length) opts.protocols = protocols;
      var r = open(opts);
      if (r && typeof r.onOpen !== 'function' && typeof r.then === 'function') {
        r.then(bind, function (err) {
          if (sock.onerror) sock.onerror(err || {});
          ended(1006, '');
        });
      } else {
        bind(r);
      }
      sock.send = function (data) {
        if (task) task.send({ data: data });
      };
      sock.close = function (code, reason) {
        sock.readyState = 2;
        var req = { code: code || 1000, reason: reason || '' };
        if (task) task.close(req);
        else pendingClose = req;
      };
      return sock;
    };
  }

  /**
   * wxSocket adapts a WeChat mini-program `wx` object to the socket
   * option: new PushgateClient({url, token, headerToken: true,
   * socket: Pushgate.wxSocket(wx)}). The token then travels in the
   * Authorization header, which wx.connectSocket can set.
   */
  function wxSocket(wx) {
    return taskSocket(function (o) { return wx.connectSocket(o); });
  }

  /**
   * uniSocket adapts uni-app's `uni` object: new PushgateClient({url, token,
   * headerToken: true, socket: Pushgate.uniSocket(uni)}). uni.connectSocket
   * returns its SocketTask only when given a callback, and on some
   * platforms fails on Sec-WebSocket-Protocol, so the envelope format is
   * asked for in the URL (?protocol=pushgate.v1).
   */
  function uniSocket(uni) {
    var f = taskSocket(function (o) {
      o.complete = function () {};
      return uni.connectSocket(o);
    });
    f.protocolInQuery = true;
    return f;
  }

  /**
   * taroSocket adapts Taro (import Taro from '@tarojs/taro'):
   * new PushgateClient({url, token, headerToken: true,
   * socket: Pushgate.taroSocket(Taro)}). Taro.connectSocket returns a
   * Promise of the SocketTask; the envelope format is asked for in the URL,
   * which works the same in every Taro target (mini-programs, H5, React
   * Native).
   */
  function taroSocket(Taro) {
    var f = taskSocket(function (o) { return Taro.connectSocket(o); });
    f.protocolInQuery = true;
    return f;
  }

  return {
    PushgateClient: PushgateClient,
    wxSocket: wxSocket,
    uniSocket: uniSocket,
    taroSocket: taroSocket,
    backoffDelay: backoffDelay,
    isTerminal: isTerminal,
    SUBPROTOCOL: SUBPROTOCOL,
  };
});
