-- pushgate's Redis scripts. Every script starts with the prelude below;
-- "-- @script name" starts a script. ARGV[1] is always the key prefix, a
-- Redis Cluster hash tag ("{pushgate}"), so every key lives in one slot and
-- every script is atomic over all of them. KEYS[1] is the prefix's lastid key,
-- for routing only.
--
-- Keys (P = prefix):
--   P:lastid        the last message id handed out (ids only grow)
--   P:epoch         the lifetime of the stored inboxes (hello.epoch)
--   P:nodes         zset node -> expiry (ms, Redis clock); a node beats it
--   P:ngen          hash node -> the generation of its lease (beat)
--   P:nfresh        hash node -> until when (ms) it counts as fresh: it beat lately
--   P:nconns        hash node -> open connections on that node
--   P:online        zset of online user ids (score 0, ordered by id)
--   P:c:<user>      hash node -> the user's connections on that node
--   P:s:<user>      hash node -> since (ms) of the user's oldest connection there
--   P:leaving       zset user -> when to report them offline (the presence grace)
--   P:nu:<node>     set of the users on a node (to clean up after it dies)
--   P:t:<topic>     hash node -> subscribers of topic on that node
--   P:nt:<node>     set of the topics a node has subscribers for
--   P:tu:<topic>    zset of the users subscribed to topic (score 0, ordered by id)
--   P:tpc:<topic>|<user>  hash node -> the user's subscribed connections there
--   P:ntp:<node>    set of "topic|user" a node has subscriptions of (to clean
--                   up after it dies)
--   P:ib:<user>     zset of inbox ids (score 0, id order)
--   P:im:<user>     hash id -> "expiresMs:dataBytes:blob"
--   P:in:<user>     hash: b (data bytes), lost (highest id lost), lu (lost remembered until, ms)
--   P:ibx           zset user -> when the user's inbox next needs a sweep (ms)
--   P:inboxed       messages in all inboxes
--   P:th:<topic>    zset of a topic's history ids (score 0, id order)
--   P:thx:<topic>   zset id -> when the entry expires (ms)
--   P:thm:<topic>   hash id -> the encoded message
--   P:thi:<topic>   hash: last (the topic's last id), lost (highest id
--                   dropped before its ttl), lu (lost remembered until, ms);
--                   expires the longest ttl after the topic's last message
--   P:w             hash node -> open WatchEvents streams on that node
--   P:wm:<node>     the id of the last stored send that node made (the
--                   data-loss guard, below); expires a while after the
--                   longest ttl
--   P:chk           hash node -> run id of the Redis on which the node last
--                   checked its mark (restore waits for the others: peers)
--   P:rc:<id>       hash user -> the message's receipt for that user (rc_get)
--   P:rch:<id>      "sentMs:expiresMs:recipients" of a message with a receipt
--   P:rcu:<id>      its recipients, newline-separated, in the order of the send
--   P:rcq           zset "id:recipients" (score 0, id order): the receipts kept
--   P:rcn           recipients in all the receipts kept
--   P:rcev          the highest id whose receipt was evicted for room
--   P:cl:<name>     the node holding the lease of an event log consumer (PX)
--   P:cc:<name>     that consumer's committed cursor
--   P:ev            stream: the event log (field e: the event's JSON); an
--                   event's cursor is "<P:epoch>.<entry id>"
-- Channels: P:n:<node> (messages for a node's users and topics, kicks, and
-- events for its WatchEvents streams), P:all (broadcasts, and the news of
-- a new epoch).

-- @prelude
local P = ARGV[1]
local function key(a, b)
  if b then return P .. ':' .. a .. ':' .. b end
  return P .. ':' .. a
end

local function nowms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local ALPH = '0123456789ABCDEFGHJKMNPQRSTVWXYZ'

-- incr returns the id that follows id in Crockford base32 order.
local function incr(id)
  local b = {string.byte(id, 1, -1)}
  for i = #b, 1, -1 do
    local d = string.find(ALPH, string.char(b[i]), 1, true)
    if d < 32 then
      b[i] = string.byte(ALPH, d + 1)
      return string.char(unpack(b))
    end
    b[i] = string.byte(ALPH, 1)
  end
  return string.char(unpack(b))
end

-- nextid returns the id for a new message: the node's proposal, or the
-- successor of the last id when the proposal does not sort after it. So ids
-- grow in the order the scripts run, which is the order every node delivers.
local function nextid(proposed)
  local last = redis.call('GET', key('lastid'))
  local id = proposed
  if last and proposed <= last then id = incr(last) end
  redis.call('SET', key('lastid'), id)
  return id
end

-- withid puts id into an encoded message (bytes 2 to 27).
local function withid(blob, id)
  return string.sub(blob, 1, 1) .. id .. string.sub(blob, 28)
end

-- publish_event logs an encoded event in the event log (P:ev, trimmed to
-- EVMAX entries: exactly below 10000, else a macro node at a time) and
-- sends it with its cursor to the nodes with WatchEvents streams. EVMAX
-- and EVKEEP (the retention, ms) are the node's --event-log-max and
-- --event-log-retention, set in front of the prelude.
local function publish_event(json)
  local ep = redis.call('GET', key('epoch'))
  if not ep then
    -- Redis lost its data and no node has made a new epoch yet.
    ep = 'T' .. nowms()
    redis.call('SET', key('epoch'), ep)
  end
  local id
  if EVMAX < 10000 then
    id = redis.call('XADD', key('ev'), 'MAXLEN', EVMAX, '*', 'e', json)
  else
    id = redis.call('XADD', key('ev'), 'MAXLEN', '~', EVMAX, '*', 'e', json)
  end
  local ws = redis.call('HKEYS', key('w'))
  if #ws == 0 then return end
  local payload = 'E' .. ep .. '.' .. id .. ' ' .. json
  for _, nd in ipairs(ws) do redis.call('PUBLISH', key('n', nd), payload) end
end

local function event(kind, user, conn, msg, implicit, now)
  publish_event(cjson.encode({k = kind, u = user, c = conn, m = msg, i = implicit, t = now}))
end
local EV_ONLINE, EV_OFFLINE, EV_ACKED = 1, 2, 3

-- live reports whether node is beating.
local function live(node, now)
  local e = redis.call('ZSCORE', key('nodes'), node)
  return e and tonumber(e) > now
end

-- Topic presence. TPEV (set in front of the prelude) is
-- --topic-presence-events: the topics (exact, or "prefix*") whose joins and
-- leaves are events.
local EV_TOPIC_JOIN, EV_TOPIC_LEAVE = 6, 7

local function tp_events(t)
  for _, p in ipairs(TPEV) do
    if string.sub(p, -1) == '*' then
      if string.sub(t, 1, #p - 1) == string.sub(p, 1, -2) then return true end
    elseif p == t then
      return true
    end
  end
  return false
end

-- tp_notify reports a join (or leave) of u on t: an event, and a frame
-- for the topic's subscribers on every node that has some ('J' or 'L').
local function tp_notify(t, u, join, now)
  local kind, tag = EV_TOPIC_LEAVE, 'L'
  if join then kind, tag = EV_TOPIC_JOIN, 'J' end
  publish_event(cjson.encode({k = kind, u = u, tp = t, t = now}))
  for _, nd in ipairs(redis.call('HKEYS', key('t', t))) do
    redis.call('PUBLISH', key('n', nd), tag .. t .. '\0' .. u)
  end
end

-- tp_set records that node holds n subscriptions of user u to topic t. The
-- user's first subscription in the deployment is a join, its last a leave.
local function tp_set(node, t, u, n, now)
  local pair = t .. '|' .. u
  local k = key('tpc', pair)
  if n > 0 then
    redis.call('SADD', key('ntp', node), pair)
    local first = redis.call('EXISTS', k) == 0
    redis.call('HSET', k, node, n)
    if first then
      redis.call('ZADD', key('tu', t), 0, u)
      if tp_events(t) then tp_notify(t, u, true, now) end
    end
    return
  end
  redis.call('SREM', key('ntp', node), pair)
  if redis.call('HDEL', k, node) == 0 or redis.call('HLEN', k) > 0 then return end
  redis.call('ZREM', key('tu', t), u)
  if tp_events(t) then tp_notify(t, u, false, now) end
end

-- tp_drop removes up to budget of node's subscriptions (a node gone);
-- returns how many.
local function tp_drop(node, budget, now)
  local ps = redis.call('SRANDMEMBER', key('ntp', node), budget)
  for _, p in ipairs(ps) do
    local t, u = string.match(p, '^([^|]*)|(.*)$')
    tp_set(node, t, u, 0, now)
  end
  return #ps
end

-- The data-loss guard. A node remembers the id of the last stored send it
-- got an answer for (its mark); the script that stored it wrote the same id
-- in P:wm:<node>. When Redis holds an older id there, or none, Redis lost
-- writes it had answered (a replica promoted before it had them, a restart
-- without persistence): the inboxes may have gaps that nothing else shows,
-- so the epoch changes (resuming clients are told recovered: false) and
-- every node hears of it on P:all ('X' epoch). keep: how long P:wm:<node>
-- lives (ms). Returns true when it made a new epoch.
local function guard(node, mark, newepoch, keep)
  if mark == '' then return false end
  local have = redis.call('GET', key('wm', node))
  if have and have >= mark then return false end
  redis.call('SET', key('epoch'), newepoch)
  redis.call('SET', key('wm', node), mark, 'PX', keep)
  redis.call('PUBLISH', key('all'), 'X' .. newepoch)
  return true
end

-- Idempotency keys. Scripts that send take ARGV[2] (the key, '' for
-- none), ARGV[3] (the request's hash) and ARGV[4] (the window, ms). A repeat
-- gets the first call's result; a key reused for another request an error.
local IK, IH, IW = ARGV[2], ARGV[3], ARGV[4]

local function idem_seen()
  if IK == '' then return nil end
  local v = redis.call('GET', key('idem', IK))
  if not v then return nil end
  if string.sub(v, 1, #IH) ~= IH then
    return redis.error_reply('IDEMPOTENCY_CONFLICT key used for another request')
  end
  -- Written again, as it stands: a WAIT for replicas that follows this
  -- repeat then covers the first call's writes, which came before.
  local left = redis.call('PTTL', key('idem', IK))
  if left > 0 then redis.call('SET', key('idem', IK), v, 'PX', left) end
  return cjson.decode(string.sub(v, #IH + 1))
end

local function idem_keep(out)
  if IK ~= '' then redis.call('SET', key('idem', IK), IH .. cjson.encode(out), 'PX', IW) end
  return out
end

-- Receipts. One per SendToUsers message, kept for ttl + retention
-- (PEXPIRE) and within a cap on the recipients of all of them (rc_bound).
-- A recipient's status is "flags:delivered:deliveredMs:ackMs:endMs:conn";
-- flags: 1 online, 2 stored, 4 acked, 8 implicit ack, 16 trimmed. A
-- recipient the send reached no connection of has no status until one is
-- written (rc_default), so a send to many offline users writes none. Expiry
-- is not written: a stored message not acked by its expiry has expired.
local RC_ONLINE, RC_STORED, RC_ACKED, RC_IMPLICIT, RC_TRIMMED = 1, 2, 4, 8, 16

-- rc_default is the status of a recipient with none written, from the
-- receipt's header.
local function rc_default(head)
  if string.match(head, '^%d+:0:') then return '0:0:0:0:0:' end
  return RC_STORED .. ':0:0:0:0:'
end

-- rc_member reports whether u is a line of the newline-separated list.
local function rc_member(list, u)
  local init = 1
  while true do
    local s, e = string.find(list, u, init, true)
    if not s then return false end
    if (s == 1 or string.byte(list, s - 1) == 10) and (e == #list or string.byte(list, e + 1) == 10) then
      return true
    end
    init = s + 1
  end
end

local function rc_get(id, u)
  local v = redis.call('HGET', key('rc', id), u)
  if not v then
    -- A recipient with no status written yet, or not a recipient (or no
    -- receipt: a Broadcast or Publish id, or one not kept).
    local head = redis.call('GET', key('rch', id))
    if not head or not rc_member(redis.call('GET', key('rcu', id)) or '', u) then return nil end
    v = rc_default(head)
  end
  local f, d, dm, am, em, c = string.match(v, '^(%d+):(%d+):(%d+):(%d+):(%d+):(.*)$')
  return {f = tonumber(f), d = tonumber(d), dm = dm, am = am, em = em, c = c}
end

local function rc_put(id, u, r)
  redis.call('HSET', key('rc', id), u, r.f .. ':' .. r.d .. ':' .. r.dm .. ':' .. r.am .. ':' .. r.em .. ':' .. r.c)
end

-- rc_ack records the first ack of id by u's connection conn; a message
-- trimmed or expired stays so.
local function rc_ack(id, u, conn, implicit, now)
  local r = rc_get(id, u)
  if not r or bit.band(r.f, RC_ACKED + RC_TRIMMED) ~= 0 then return end
  if bit.band(r.f, RC_STORED) ~= 0 then
    local exp = tonumber(string.match(redis.call('GET', key('rch', id)) or '', '^%d+:(%d+):'))
    if exp and exp <= now then return end
  end
  r.f = r.f + RC_ACKED
  if implicit then r.f = r.f + RC_IMPLICIT end
  r.am, r.c = now, conn or ''
  rc_put(id, u, r)
end

-- rc_delivered records that id was queued on one more connection of u.
local function rc_delivered(id, u, now)
  local r = rc_get(id, u)
  if not r then return end
  r.d, r.dm = r.d + 1, now
  rc_put(id, u, r)
end

-- rc_trim records that id left u's inbox for room.
local function rc_trim(id, u, now)
  local r = rc_get(id, u)
  if not r or bit.band(r.f, RC_ACKED + RC_TRIMMED) ~= 0 then return end
  r.f, r.em = r.f + RC_TRIMMED, now
  rc_put(id, u, r)
end

-- rc_esc applies f to recipient u's escalation in message id's receipt:
-- P:rce:<id>, a hash u -> JSON {s: state (1 scheduled, 2 cancelled, 3
-- fired, 4 not scheduled), d: due ms, t: cancelled/fired ms, r: results
-- [{ch, tg, r, dt, tm}]}, expiring with the receipt. Nothing when the
-- receipt is not kept.
local function rc_esc(id, u, f)
  local ttl = redis.call('PTTL', key('rch', id))
  if ttl <= 0 then return end
  local k = key('rce', id)
  local v = redis.call('HGET', k, u)
  local e = v and cjson.decode(v) or {s = 0, d = 0, t = 0}
  f(e)
  redis.call('HSET', k, u, cjson.encode(e))
  redis.call('PEXPIRE', k, ttl)
end

-- rc_bound drops the receipts at the front of the order that are gone
-- (their keys expired), and the oldest ones while more than maxn
-- recipients are kept (never keep, the one just recorded). Returns how many
-- it evicted.
local function rc_bound(maxn, keep)
  local n = tonumber(redis.call('GET', key('rcn')) or '0')
  local evicted = 0
  for _ = 1, 1000 do
    local first = redis.call('ZRANGE', key('rcq'), 0, 0)[1]
    if not first then break end
    local fid, cnt = string.match(first, '^(.-):(%d+)$')
    if fid == keep then break end
    local alive = redis.call('EXISTS', key('rch', fid)) == 1
    if alive and n <= maxn then break end
    if alive then
      redis.call('DEL', key('rch', fid), key('rcu', fid), key('rc', fid), key('rce', fid))
      local ev = redis.call('GET', key('rcev'))
      if not ev or fid > ev then redis.call('SET', key('rcev'), fid) end
      evicted = evicted + 1
    end
    redis.call('ZREM', key('rcq'), first)
    n = redis.call('DECRBY', key('rcn'), tonumber(cnt))
  end
  return evicted
end

-- rc_record keeps the receipt of message id sent at now: users (ARGV from
-- index first) with reached[i] connections each, stored when ttl > 0.
local function rc_record(id, now, ttl, retention, maxn, first, reached)
  local keep = ttl + retention
  local exp = 0
  if ttl > 0 then exp = now + ttl end
  -- Statuses only for the recipients reached (the others read as
  -- rc_default), one string per distinct count (most sends have few), so
  -- the loop makes no strings of its own.
  local stored = 0
  if ttl > 0 then stored = RC_STORED end
  local vals = {}
  local fields, k = {}, 0
  for i = first, #ARGV do
    local n = reached[i]
    if n > 0 then
      local v = vals[n]
      if not v then
        v = (RC_ONLINE + stored) .. ':' .. n .. ':' .. now .. ':0:0:'
        vals[n] = v
      end
      fields[k + 1], fields[k + 2] = ARGV[i], v
      k = k + 2
      if k >= 1000 then
        redis.call('HSET', key('rc', id), unpack(fields, 1, k))
        k = 0
      end
    end
  end
  if k > 0 then redis.call('HSET', key('rc', id), unpack(fields, 1, k)) end
  local total = #ARGV - first + 1
  redis.call('SET', key('rch', id), now .. ':' .. exp .. ':' .. total, 'PX', keep)
  redis.call('SET', key('rcu', id), table.concat(ARGV, '\n', first), 'PX', keep)
  redis.call('PEXPIRE', key('rc', id), keep)
  redis.call('ZADD', key('rcq'), 0, id .. ':' .. total)
  redis.call('INCRBY', key('rcn'), total)
  return rc_bound(maxn, id)
end

-- Inbox.

local function ib_remove(u, id, lost, now, remember)
  local v = redis.call('HGET', key('im', u), id)
  if not v then return false end
  local n = tonumber(string.match(v, '^%d+:(%d+):'))
  redis.call('HDEL', key('im', u), id)
  redis.call('ZREM', key('ib', u), id)
  redis.call('HINCRBY', key('in', u), 'b', -n)
  redis.call('DECR', key('inboxed'))
  if lost then
    local l = redis.call('HGET', key('in', u), 'lost')
    if not l or id > l then redis.call('HSET', key('in', u), 'lost', id) end
    redis.call('HSET', key('in', u), 'lu', now + remember)
  end
  return true
end

local function ib_expire(u, now, remember)
  local ids = redis.call('ZRANGE', key('ib', u), 0, -1)
  local n = 0
  for _, id in ipairs(ids) do
    local v = redis.call('HGET', key('im', u), id)
    if v and tonumber(string.match(v, '^(%d+):')) <= now then
      ib_remove(u, id, true, now, remember)
      n = n + 1
    end
  end
  return n
end

-- ib_tidy drops an inbox with nothing worth keeping, or schedules its next sweep.
local function ib_tidy(u, now)
  local lu = tonumber(redis.call('HGET', key('in', u), 'lu') or '0')
  local ids = redis.call('ZRANGE', key('ib', u), 0, -1)
  if #ids == 0 and lu <= now then
    redis.call('DEL', key('ib', u), key('im', u), key('in', u))
    redis.call('ZREM', key('ibx'), u)
    return
  end
  local due = nil
  if lu > now then due = lu end
  for _, id in ipairs(ids) do
    local v = redis.call('HGET', key('im', u), id)
    if v then
      local e = tonumber(string.match(v, '^(%d+):'))
      if not due or e < due then due = e end
    end
  end
  if due then redis.call('ZADD', key('ibx'), due, u) end
end

-- esc_left: id left u's inbox without an ack (trimmed for room), so nobody
-- saw it: an escalation of it waiting for an ack (notify.lua, P:esc and
-- P:escd) becomes due now and fires whatever comes next.
local function esc_left(id, u, now)
  local m = u .. '\n' .. id
  local d = redis.call('HGET', key('escd'), m)
  if not d or string.sub(d, 1, 1) ~= '1' then return end
  redis.call('HSET', key('escd'), m, '0' .. string.sub(d, 2))
  local s = tonumber(redis.call('ZSCORE', key('esc'), m))
  if s and s > now then
    redis.call('ZADD', key('esc'), now, m)
    rc_esc(id, u, function(e) e.d = now end)
  end
end

-- ib_add stores a message and trims the oldest entries past the caps; it
-- returns how many it trimmed.
local function ib_add(u, id, blob, size, expires, maxmsgs, maxbytes, now, remember)
  redis.call('ZADD', key('ib', u), 0, id)
  redis.call('HSET', key('im', u), id, expires .. ':' .. size .. ':' .. blob)
  local b = redis.call('HINCRBY', key('in', u), 'b', size)
  redis.call('INCR', key('inboxed'))
  local trimmed = 0
  while true do
    local cnt = redis.call('ZCARD', key('ib', u))
    if cnt <= 1 or (cnt <= maxmsgs and b <= maxbytes) then break end
    local first = redis.call('ZRANGE', key('ib', u), 0, 0)[1]
    ib_remove(u, first, true, now, remember)
    rc_trim(first, u, now)
    esc_left(first, u, now)
    trimmed = trimmed + 1
    b = tonumber(redis.call('HGET', key('in', u), 'b'))
  end
  local due = redis.call('ZSCORE', key('ibx'), u)
  if not due or expires < tonumber(due) then redis.call('ZADD', key('ibx'), expires, u) end
  return trimmed
end

-- ib_after returns the live entries after lastid ('' for all) as encoded
-- messages, and whether nothing after lastid was lost.
local function ib_after(u, lastid, now)
  local ids
  if lastid == '' then
    ids = redis.call('ZRANGE', key('ib', u), 0, -1)
  else
    ids = redis.call('ZRANGEBYLEX', key('ib', u), '(' .. lastid, '+')
  end
  local out = {}
  for _, id in ipairs(ids) do
    local v = redis.call('HGET', key('im', u), id)
    if v then
      local e, pos = string.match(v, '^(%d+):%d+:()')
      if tonumber(e) > now then out[#out + 1] = string.sub(v, pos) end
    end
  end
  local lost = redis.call('HGET', key('in', u), 'lost')
  local lu = tonumber(redis.call('HGET', key('in', u), 'lu') or '0')
  local complete = (not lost) or lost <= lastid or lu <= now
  return out, complete
end

-- Presence.

-- setpresence records that node holds n connections of u (since: ms of the
-- oldest). It returns true when u went offline cluster-wide and must be
-- reported after the grace.
local function setpresence(node, u, n, since, grace, now)
  local ck = key('c', u)
  if n > 0 then
    redis.call('HSET', ck, node, n)
    redis.call('HSET', key('s', u), node, since)
    redis.call('SADD', key('nu', node), u)
    if redis.call('ZADD', key('online'), 0, u) == 1 then
      -- Back within the grace: no offline, no online.
      if redis.call('ZREM', key('leaving'), u) == 0 then event(EV_ONLINE, u, nil, nil, false, now) end
    end
    return false
  end
  redis.call('SREM', key('nu', node), u)
  if redis.call('HDEL', ck, node) == 0 then return false end
  redis.call('HDEL', key('s', u), node)
  if redis.call('HLEN', ck) > 0 then return false end
  redis.call('ZREM', key('online'), u)
  if grace > 0 then
    redis.call('ZADD', key('leaving'), now + grace, u)
    return true
  end
  event(EV_OFFLINE, u, nil, nil, false, now)
  return false
end

-- offline_due reports the users whose grace is over offline (any node may:
-- the one they left may be gone). Returns how many.
local function offline_due(now, limit)
  local us = redis.call('ZRANGEBYSCORE', key('leaving'), '-inf', now, 'LIMIT', 0, limit)
  for _, u in ipairs(us) do
    redis.call('ZREM', key('leaving'), u)
    event(EV_OFFLINE, u, nil, nil, false, now)
  end
  return #us
end

-- drop_node removes what is left of a node once its users are gone: its
-- topic routes, counts, watchers and lease.
local function drop_node(node)
  for _, t in ipairs(redis.call('SMEMBERS', key('nt', node))) do
    redis.call('HDEL', key('t', t), node)
  end
  redis.call('DEL', key('nu', node), key('nt', node), key('ntp', node))
  redis.call('HDEL', key('nconns'), node)
  redis.call('HDEL', key('w'), node)
  redis.call('HDEL', key('ngen'), node)
  redis.call('HDEL', key('nfresh'), node)
  redis.call('HDEL', key('chk'), node)
  redis.call('ZREM', key('nodes'), node)
end

-- userconns returns the user's connections on live nodes and the oldest since.
local function userconns(u, now)
  local hv = redis.call('HGETALL', key('c', u))
  local n, since = 0, nil
  for j = 1, #hv, 2 do
    if live(hv[j], now) then
      n = n + tonumber(hv[j + 1])
      local s = tonumber(redis.call('HGET', key('s', u), hv[j]) or '0')
      if s > 0 and (not since or s < since) then since = s end
    end
  end
  return n, since or 0
end

-- Topic histories (gateway/history.go). A topic with a history rule keeps
-- its last messages; the publish script stores each with its id, so "after
-- id X" is exact for a topic. The entry keys expire with the newest entry;
-- the record (P:thi) the longest ttl after the last message, so that a
-- client resuming from before a loss is told, and one from a topic with no
-- record at all is told it may have missed something.

-- idms returns when a message id was made (ms since 1970, its first 10
-- characters).
local function idms(id)
  local ms = 0
  for i = 1, 10 do
    ms = ms * 32 + (string.find(ALPH, string.sub(id, i, i), 1, true) or 1) - 1
  end
  return ms
end

-- th_drop removes ids from topic t's history as lost (not delivered to a
-- resuming client) and remembers the highest.
local function th_drop(t, ids, now, remember)
  if #ids == 0 then return 0 end
  local lost = redis.call('HGET', key('thi', t), 'lost') or ''
  for _, id in ipairs(ids) do
    if id > lost then lost = id end
  end
  redis.call('ZREM', key('th', t), unpack(ids))
  redis.call('ZREM', key('thx', t), unpack(ids))
  redis.call('HDEL', key('thm', t), unpack(ids))
  redis.call('HSET', key('thi', t), 'lost', lost, 'lu', now + remember)
  return #ids
end

-- th_expire drops topic t's entries whose ttl passed; returns how many.
local function th_expire(t, now, remember)
  return th_drop(t, redis.call('ZRANGEBYSCORE', key('thx', t), '-inf', now), now, remember)
end

-- th_add keeps a message in topic t's history, at most maxmsgs entries
-- (the oldest go first); returns how many it trimmed.
local function th_add(t, id, blob, expires, maxmsgs, now, remember)
  if redis.call('EXISTS', key('th', t)) == 0 then
    -- The entries before, if any, expired with their keys: lost.
    local prev = redis.call('HGET', key('thi', t), 'last')
    if prev then th_drop(t, {prev}, now, remember) end
  end
  redis.call('ZADD', key('th', t), 0, id)
  redis.call('ZADD', key('thx', t), expires, id)
  redis.call('HSET', key('thm', t), id, blob)
  local trimmed = 0
  local n = redis.call('ZCARD', key('th', t))
  if n > maxmsgs then
    trimmed = th_drop(t, redis.call('ZRANGE', key('th', t), 0, n - maxmsgs - 1), now, remember)
  end
  redis.call('HSET', key('thi', t), 'last', id)
  local life = expires - now
  for _, k in ipairs({key('th', t), key('thx', t), key('thm', t)}) do
    if redis.call('PTTL', k) < life then redis.call('PEXPIRE', k, life) end
  end
  redis.call('PEXPIRE', key('thi', t), remember)
  return trimmed
end

-- th_after returns topic t's kept messages after lastid, and whether
-- nothing after lastid was lost.
local function th_after(t, lastid, now, remember)
  local info = redis.call('HMGET', key('thi', t), 'last', 'lost', 'lu')
  if not info[1] then
    -- No record: nothing was published to t for remember ms. A position
    -- from within that time missed nothing; what followed an older one
    -- is forgotten.
    return {}, now - idms(lastid) < remember
  end
  local out = {}
  local ids = redis.call('ZRANGEBYLEX', key('th', t), '(' .. lastid, '+')
  if #ids > 0 then
    for _, b in ipairs(redis.call('HMGET', key('thm', t), unpack(ids))) do
      if b then out[#out + 1] = b end
    end
  end
  if info[1] <= lastid then return out, true end
  -- Entries after lastid existed; none kept means they expired with
  -- their keys.
  if #ids == 0 and redis.call('EXISTS', key('th', t)) == 0 then return out, false end
  return out, not info[2] or info[2] <= lastid or tonumber(info[3] or '0') <= now
end

-- @script join
-- ARGV: P node user conn count since lastid resume clientepoch newepoch
--       nodetotal grace remember mark keep
-- A connection joins: its node holds the user from now on (sends after this
-- reach it live), and it gets the hello's epoch, the last id handed out
-- (messages up to it are not live for it) and the replay. The node's mark
-- is checked first (guard), so a join on a Redis that lost the node's
-- writes is told of the gap.
local node, u, conn = ARGV[2], ARGV[3], ARGV[4]
local count, since, lastid = tonumber(ARGV[5]), ARGV[6], ARGV[7]
local resume, cepoch = ARGV[8] == '1', ARGV[9]
local grace, remember = tonumber(ARGV[12]), tonumber(ARGV[13])
local now = nowms()
guard(node, ARGV[14], ARGV[10], tonumber(ARGV[15]))
local ep = redis.call('GET', key('epoch'))
if not ep then
  ep = ARGV[10]
  redis.call('SET', key('epoch'), ep)
end
setpresence(node, u, count, since, grace, now)
redis.call('HSET', key('nconns'), node, ARGV[11])
local same = cepoch == '' or cepoch == ep
local expired = ib_expire(u, now, remember)
local acked = 0
if resume and same and lastid ~= '' then
  for _, id in ipairs(redis.call('ZRANGEBYLEX', key('ib', u), '-', '[' .. lastid)) do
    if ib_remove(u, id, false, now, remember) then
      acked = acked + 1
      event(EV_ACKED, u, conn, id, true, now)
      rc_ack(id, u, conn, true, now)
    end
  end
end
local replay, complete = ib_after(u, lastid, now)
for _, b in ipairs(replay) do rc_delivered(string.sub(b, 2, 27), u, now) end
if not same then complete = false end
ib_tidy(u, now)
local seq = redis.call('GET', key('lastid')) or ''
local out = {ep, seq, complete and 1 or 0, expired, acked}
for _, b in ipairs(replay) do out[#out + 1] = b end
return out

-- @script presence
-- ARGV: P node grace nodetotal (user count since)...
-- Absolute presence of users on this node; returns how many went offline
-- cluster-wide (to be reported after the grace).
local node, grace = ARGV[2], tonumber(ARGV[3])
local now = nowms()
local leaving = 0
for i = 5, #ARGV, 3 do
  if setpresence(node, ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2], grace, now) then
    leaving = leaving + 1
  end
end
redis.call('HSET', key('nconns'), node, ARGV[4])
return leaving

-- @script offline
-- ARGV: P
-- Reports the users whose grace is over offline.
return offline_due(nowms(), 1000)

-- @script emit
-- ARGV: P event
-- A client's message for the WatchEvents streams of every node.
publish_event(ARGV[2])
return 0

-- @script events
-- ARGV: P epoch id next limit
-- Up to limit logged events after the entry id of the log of epoch ('' for
-- the oldest kept; next is the id after it): {epoch, id, json, id, json...},
-- or {'OLD', oldest cursor} when that entry is no longer kept or the log is
-- another epoch's. An epoch with no id is the start of that epoch's log (a
-- reader that found it empty): nothing may have been trimmed from it.
local ep = redis.call('GET', key('epoch')) or ''
local start = '-'
local old = false
if ARGV[3] ~= '' then
  old = ARGV[2] ~= ep or #redis.call('XRANGE', key('ev'), ARGV[3], ARGV[3]) == 0
  start = ARGV[4]
elseif ARGV[2] ~= '' then
  old = ARGV[2] ~= ep
  if not old and redis.call('EXISTS', key('ev')) == 1 then
    -- trimmed: fewer entries than were ever added (Redis 7's counter)
    local info = redis.call('XINFO', 'STREAM', key('ev'))
    for i = 1, #info, 2 do
      if info[i] == 'entries-added' then old = info[i + 1] ~= redis.call('XLEN', key('ev')) end
    end
  end
end
if old then
  local first = redis.call('XRANGE', key('ev'), '-', '+', 'COUNT', 1)
  if #first == 0 then return {'OLD', '0'} end
  return {'OLD', ep .. '.' .. first[1][1]}
end
local out = {ep}
for _, e in ipairs(redis.call('XRANGE', key('ev'), start, '+', 'COUNT', tonumber(ARGV[5]))) do
  out[#out + 1] = e[1]
  out[#out + 1] = e[2][2]
end
return out

-- @script events_end
-- ARGV: P
-- Where the log ends now: {epoch, last entry id ('' when empty)}.
local last = redis.call('XREVRANGE', key('ev'), '+', '-', 'COUNT', 1)
local ep = redis.call('GET', key('epoch')) or ''
if #last == 0 then return {ep, ''} end
return {ep, last[1][1]}

-- @script consumer_lease
-- ARGV: P name node ttl
-- Takes or renews the consumer's lease for node; 1 when node holds it.
local holder = redis.call('GET', key('cl', ARGV[2]))
if holder and holder ~= ARGV[3] then return 0 end
redis.call('SET', key('cl', ARGV[2]), ARGV[3], 'PX', ARGV[4])
return 1

-- @script consumer_commit
-- ARGV: P name node cursor
-- Records the consumer's cursor if node holds its lease (1), else 0.
if redis.call('GET', key('cl', ARGV[2])) ~= ARGV[3] then return 0 end
redis.call('SET', key('cc', ARGV[2]), ARGV[4])
return 1

-- @script consumer_release
-- ARGV: P name node
if redis.call('GET', key('cl', ARGV[2])) == ARGV[3] then redis.call('DEL', key('cl', ARGV[2])) end
return 0

-- @script watchers
-- ARGV: P node count
-- The node's open WatchEvents streams.
if tonumber(ARGV[3]) > 0 then
  redis.call('HSET', key('w'), ARGV[2], ARGV[3])
else
  redis.call('HDEL', key('w'), ARGV[2])
end
return 0

-- @script epoch
-- ARGV: P newepoch node mark keep runid
-- The inboxes' epoch, made now if Redis has none (first start, or data lost)
-- or if Redis lost writes it had answered the node (guard). The node has
-- checked its mark on the Redis of that run id ('' if unknown).
guard(ARGV[3], ARGV[4], ARGV[2], tonumber(ARGV[5]))
if ARGV[6] ~= '' then redis.call('HSET', key('chk'), ARGV[3], ARGV[6]) end
local ep = redis.call('GET', key('epoch'))
if not ep then
  ep = ARGV[2]
  redis.call('SET', key('epoch'), ep)
end
return ep

-- @script peers
-- ARGV: P node runid
-- How many other live nodes have not checked their mark on the Redis of
-- this run id yet.
local now = nowms()
local n = 0
for _, nd in ipairs(redis.call('ZRANGEBYSCORE', key('nodes'), '(' .. now, '+inf')) do
  if nd ~= ARGV[2] and redis.call('HGET', key('chk'), nd) ~= ARGV[3] then n = n + 1 end
end
return n

-- @script topics
-- ARGV: P node (topic count nusers (user count)...)...
-- The node's subscribers of each topic, and of the users given how many
-- of their connections are subscribed (topic presence).
local node = ARGV[2]
local now = nowms()
local i = 3
while i <= #ARGV do
  local t, n, nu = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  if n > 0 then
    redis.call('HSET', key('t', t), node, n)
    redis.call('SADD', key('nt', node), t)
  else
    redis.call('HDEL', key('t', t), node)
    redis.call('SREM', key('nt', node), t)
  end
  for j = i + 3, i + 2 + 2 * nu, 2 do
    tp_set(node, t, ARGV[j], tonumber(ARGV[j + 1]), now)
  end
  i = i + 3 + 2 * nu
end
return 0

-- @script tpresence
-- ARGV: P topic after limit
-- A page of the topic's users after `after`: the totals (users, and
-- connections on live nodes), 1 when more may follow and the last user
-- looked at, then (user conns)... for the users with connections on live
-- nodes (a dead node's are left out before the reaper removes them).
local t, after, limit = ARGV[2], ARGV[3], tonumber(ARGV[4])
local now = nowms()
local min = '-'
if after ~= '' then min = '(' .. after end
local us = redis.call('ZRANGEBYLEX', key('tu', t), min, '+', 'LIMIT', 0, limit + 1)
local conns = 0
local hv = redis.call('HGETALL', key('t', t))
for j = 1, #hv, 2 do
  if live(hv[j], now) then conns = conns + tonumber(hv[j + 1]) end
end
local more, last = 0, ''
if #us > limit then
  more = 1
  us[#us] = nil
  last = us[#us]
end
local out = {redis.call('ZCARD', key('tu', t)), conns, more, last}
for _, u in ipairs(us) do
  local cv = redis.call('HGETALL', key('tpc', t .. '|' .. u))
  local n = 0
  for j = 1, #cv, 2 do
    if live(cv[j], now) then n = n + tonumber(cv[j + 1]) end
  end
  if n > 0 then
    out[#out + 1] = u
    out[#out + 1] = n
  end
end
return out

-- @script send
-- ARGV: P ik ih iw proposedid ttl maxmsgs maxbytes remember size node mark
--       keep newepoch blob receiptretention receiptmax user...
-- Stores (ttl > 0) and publishes a message to each user's nodes, and keeps
-- its receipt. Returns the id, then per user: connections reached, stored
-- (0/1), entries trimmed; then the receipts evicted for room. A repeated
-- idempotency key gets the first result and "replayed".
-- For a stored message (ttl > 0) the node's mark is checked first (guard),
-- and the message becomes the node's new mark; a live one passes '' for
-- node, mark and newepoch.
local node, keep = ARGV[11], tonumber(ARGV[13])
guard(node, ARGV[12], ARGV[14], keep)
local seen = idem_seen()
if seen then
  table.insert(seen, 'replayed')
  return seen
end
local ttl, maxmsgs, maxbytes = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local remember, size = tonumber(ARGV[9]), tonumber(ARGV[10])
local now = nowms()
local id = nextid(ARGV[5])
local blob = withid(ARGV[15], id)
if ttl > 0 then redis.call('SET', key('wm', node), id, 'PX', keep) end
local nodes, order = {}, {}
local reached, trimmed = {}, {}
for i = 18, #ARGV do
  local u = ARGV[i]
  reached[i] = 0
  trimmed[i] = 0
  if ttl > 0 then trimmed[i] = ib_add(u, id, blob, size, now + ttl, maxmsgs, maxbytes, now, remember) end
  local hv = redis.call('HGETALL', key('c', u))
  for j = 1, #hv, 2 do
    local e = nodes[hv[j]]
    if not e then
      e = {users = {}, idx = {}, counts = {}}
      nodes[hv[j]] = e
      order[#order + 1] = hv[j]
    end
    e.users[#e.users + 1] = u
    e.idx[#e.idx + 1] = i
    e.counts[#e.counts + 1] = tonumber(hv[j + 1])
  end
end
for _, nd in ipairs(order) do
  local e = nodes[nd]
  -- Published to every node that holds a user; counted as reached only on
  -- a node that listens and beat lately (one cut off from Redis stops
  -- beating long before its lease runs out).
  local fresh = tonumber(redis.call('HGET', key('nfresh'), nd) or '0') > now
  if redis.call('PUBLISH', key('n', nd), 'U' .. table.concat(e.users, '\n') .. '\0' .. blob) > 0 and fresh then
    for k, i in ipairs(e.idx) do reached[i] = reached[i] + e.counts[k] end
  end
end
local out = {id}
for i = 18, #ARGV do
  out[#out + 1] = reached[i]
  out[#out + 1] = ttl > 0 and 1 or 0
  out[#out + 1] = trimmed[i]
end
-- A repeat (idem_seen) reports no evictions: they were counted once.
out[#out + 1] = 0
idem_keep(out)
out[#out] = rc_record(id, now, ttl, tonumber(ARGV[16]), tonumber(ARGV[17]), 18, reached)
return out

-- @script broadcast
-- ARGV: P ik ih iw proposedid blob excluded...
-- Returns the id and the connections on live nodes (less the excluded
-- users'), or 0 when no node heard it.
local seen = idem_seen()
if seen then return seen end
local now = nowms()
local id = nextid(ARGV[5])
local blob = withid(ARGV[6], id)
local ex = {}
for i = 7, #ARGV do ex[#ex + 1] = ARGV[i] end
local total = 0
if redis.call('PUBLISH', key('all'), 'B' .. table.concat(ex, '\n') .. '\0' .. blob) > 0 then
  local hv = redis.call('HGETALL', key('nconns'))
  for j = 1, #hv, 2 do
    if live(hv[j], now) then total = total + tonumber(hv[j + 1]) end
  end
  for _, u in ipairs(ex) do total = total - userconns(u, now) end
  if total < 0 then total = 0 end
end
return idem_keep({id, total})

-- @script publish
-- ARGV: P ik ih iw proposedid topic blob [maxmsgs ttl remember node mark keep newepoch]
-- Publishes to the nodes with subscribers; returns the id and the
-- subscribers reached. With maxmsgs (a topic with history) the message is
-- kept in the topic's history for ttl ms, the node's mark checked first
-- and moved to it (as a stored send's), and the reply also has the entries
-- trimmed and expired.
local kept = ARGV[8] ~= nil
if kept then guard(ARGV[11], ARGV[12], ARGV[14], tonumber(ARGV[13])) end
local seen = idem_seen()
if seen then return seen end
local topic = ARGV[6]
local id = nextid(ARGV[5])
local blob = withid(ARGV[7], id)
local trimmed, expired = 0, 0
if kept then
  local now, remember = nowms(), tonumber(ARGV[10])
  expired = th_expire(topic, now, remember)
  trimmed = th_add(topic, id, blob, now + tonumber(ARGV[9]), tonumber(ARGV[8]), now, remember)
  redis.call('SET', key('wm', ARGV[11]), id, 'PX', tonumber(ARGV[13]))
end
local total = 0
local hv = redis.call('HGETALL', key('t', topic))
for j = 1, #hv, 2 do
  if redis.call('PUBLISH', key('n', hv[j]), 'T' .. topic .. '\0' .. blob) > 0 then
    total = total + tonumber(hv[j + 1])
  end
end
if kept then return idem_keep({id, total, trimmed, expired}) end
return idem_keep({id, total})

-- @script topic_history
-- ARGV: P topic lastid clientepoch newepoch remember node mark keep
-- The epoch, whether nothing after lastid was lost, how many entries
-- expired, the last id handed out (every later message gets a greater
-- one), and (with lastid) the topic's kept messages after lastid. The
-- node's mark is checked first (guard), as for a join.
local t, lastid, cepoch = ARGV[2], ARGV[3], ARGV[4]
guard(ARGV[7], ARGV[8], ARGV[5], tonumber(ARGV[9]))
local ep = redis.call('GET', key('epoch'))
if not ep then
  ep = ARGV[5]
  redis.call('SET', key('epoch'), ep)
end
local seq = redis.call('GET', key('lastid')) or ''
if lastid == '' then return {ep, 1, 0, seq} end
local now = nowms()
local expired = th_expire(t, now, tonumber(ARGV[6]))
local replay, complete = th_after(t, lastid, now, tonumber(ARGV[6]))
if cepoch ~= '' and cepoch ~= ep then complete = false end
local out = {ep, complete and 1 or 0, expired, seq}
for _, b in ipairs(replay) do out[#out + 1] = b end
return out

-- @script kick
-- ARGV: P user text grace
-- Asks the user's nodes to close the user's connections, and counts them
-- gone at once (the nodes write their own counts again as they close, and
-- when a connection joins meanwhile). Returns how many it asked to close
-- and whether the user went offline (to be reported after the grace).
local u, grace = ARGV[2], tonumber(ARGV[4])
local now = nowms()
local total, leaving = 0, 0
local hv = redis.call('HGETALL', key('c', u))
for j = 1, #hv, 2 do
  if redis.call('PUBLISH', key('n', hv[j]), 'K' .. u .. '\0' .. ARGV[3]) > 0 then
    total = total + tonumber(hv[j + 1])
    if setpresence(hv[j], u, 0, '', grace, now) then leaving = 1 end
  end
end
return {total, leaving}

-- @script ack
-- ARGV: P user conn implicit remember id...
-- Removes acknowledged entries; returns how many were there.
local u, conn, implicit = ARGV[2], ARGV[3], ARGV[4] == '1'
local remember = tonumber(ARGV[5])
local now = nowms()
local n = 0
for i = 6, #ARGV do
  if ib_remove(u, ARGV[i], false, now, remember) then
    n = n + 1
    event(EV_ACKED, u, conn, ARGV[i], implicit, now)
  end
  -- Every id, stored or not: a live message acknowledged counts too.
  rc_ack(ARGV[i], u, conn, implicit, now)
end
if n > 0 then ib_tidy(u, now) end
return n

-- @script after
-- ARGV: P (user lastid)...
-- Each user's stored messages after lastid, as a count and the messages (a
-- node catching up after it was cut off).
local now = nowms()
local out = {}
for i = 2, #ARGV, 2 do
  local msgs = ib_after(ARGV[i], ARGV[i + 1], now)
  out[#out + 1] = #msgs
  for _, m in ipairs(msgs) do out[#out + 1] = m end
end
return out

-- @script beat
-- ARGV: P node ttl nodetotal gen register
-- (It also records until when the node counts as fresh: two thirds of ttl,
-- one missed beat and a margin. Sends count a node's connections as
-- reached only while it is fresh.)
-- A node is alive until now + ttl. Its lease has a generation: register
-- ('1') starts a new one (the node is about to write its whole state);
-- a plain beat renews only the current one. Returns 0 when the node, in
-- that generation, was not known (reaped, or Redis lost its data; or the
-- beat is a late one of an older generation): nothing is renewed, and the
-- node must register and write its state again. So a beat delayed past a
-- reaping cannot bring a node back unnoticed.
local node, gen = ARGV[2], ARGV[5]
local now = nowms()
if ARGV[6] ~= '1' and redis.call('HGET', key('ngen'), node) ~= gen then return 0 end
redis.call('HSET', key('ngen'), node, gen)
redis.call('HSET', key('nfresh'), node, now + math.floor(tonumber(ARGV[3]) * 2 / 3))
redis.call('ZADD', key('nodes'), now + tonumber(ARGV[3]), node)
redis.call('HSET', key('nconns'), node, ARGV[4])
return 1

-- @script leave
-- ARGV: P node grace
-- A node stopping cleanly: removes it now. Its users go offline unless held
-- by another node, reported after the grace (they usually reconnect to
-- another node within it).
local node, grace = ARGV[2], tonumber(ARGV[3])
local now = nowms()
for _, u in ipairs(redis.call('SMEMBERS', key('nu', node))) do
  setpresence(node, u, 0, 0, grace, now)
end
tp_drop(node, redis.call('SCARD', key('ntp', node)), now)
drop_node(node)
return 0

-- @script reap
-- ARGV: P remember
-- Removes nodes that stopped beating, or that wrote state without a lease
-- (their users go offline at once unless held by another node), reports
-- due offline events, and expires due inbox entries, a bounded amount of
-- work per call. Returns nodes removed, users removed, entries expired, and
-- 1 when there is more to do.
local remember = tonumber(ARGV[2])
local now = nowms()
local budget = 2000
local dead = redis.call('ZRANGEBYSCORE', key('nodes'), '-inf', now, 'LIMIT', 0, 4)
local more = 0
if #dead == 4 then more = 1 end
for _, node in ipairs(redis.call('HKEYS', key('nconns'))) do
  if not redis.call('ZSCORE', key('nodes'), node) then dead[#dead + 1] = node end
end
local removed, users = 0, 0
for _, node in ipairs(dead) do
  if budget <= 0 then more = 1 break end
  local us = redis.call('SRANDMEMBER', key('nu', node), budget)
  for _, u in ipairs(us) do
    setpresence(node, u, 0, 0, 0, now)
    users = users + 1
  end
  budget = budget - #us
  if budget > 0 then budget = budget - tp_drop(node, budget, now) end
  if redis.call('SCARD', key('nu', node)) > 0 or redis.call('SCARD', key('ntp', node)) > 0 then
    more = 1
  else
    drop_node(node)
    removed = removed + 1
  end
end
if offline_due(now, 1000) == 1000 then more = 1 end
local expired = 0
local due = redis.call('ZRANGEBYSCORE', key('ibx'), '-inf', now, 'LIMIT', 0, 500)
for _, u in ipairs(due) do
  expired = expired + ib_expire(u, now, remember)
  ib_tidy(u, now)
end
if #due == 500 then more = 1 end
-- The event log keeps EVKEEP ms of events, and the newest event older than
-- that (a consumer that saw it before a quiet spell can resume after it).
local anchor = redis.call('XREVRANGE', key('ev'), now - EVKEEP, '-', 'COUNT', 1)
if #anchor > 0 then redis.call('XTRIM', key('ev'), 'MINID', anchor[1][1]) end
return {removed, users, expired, more}

-- @script list
-- ARGV: P after limit
-- A page of online users after `after`: totals, then (user conns since)...
local after, limit = ARGV[2], tonumber(ARGV[3])
local now = nowms()
local min = '-'
if after ~= '' then min = '(' .. after end
local us = redis.call('ZRANGEBYLEX', key('online'), min, '+', 'LIMIT', 0, limit + 1)
local conns = 0
local hv = redis.call('HGETALL', key('nconns'))
for j = 1, #hv, 2 do
  if live(hv[j], now) then conns = conns + tonumber(hv[j + 1]) end
end
local out = {redis.call('ZCARD', key('online')), conns}
for _, u in ipairs(us) do
  local n, since = userconns(u, now)
  out[#out + 1] = u
  out[#out + 1] = n
  out[#out + 1] = since
end
return out

-- @script presenceof
-- ARGV: P user...
-- (conns since) per user.
local now = nowms()
local out = {}
for i = 2, #ARGV do
  local n, since = userconns(ARGV[i], now)
  out[#out + 1] = n
  out[#out + 1] = since
end
return out

-- @script receipt
-- ARGV: P id offset limit user...
-- A page of a message's receipt: 1, "sentMs:expiresMs:recipients", then
-- (user status escalation) for the users given, or for limit recipients
-- from offset (status '' for a user that was not a recipient; escalation
-- the JSON of rc_esc, '' for none). Without a receipt: 0 and
-- the highest id evicted for room ('' none).
local id = ARGV[2]
local h = redis.call('GET', key('rch', id))
if not h then return {0, redis.call('GET', key('rcev')) or ''} end
local us = {}
if #ARGV >= 5 then
  for i = 5, #ARGV do us[#us + 1] = ARGV[i] end
else
  local off, lim = tonumber(ARGV[3]), tonumber(ARGV[4])
  local k = 0
  for u in string.gmatch(redis.call('GET', key('rcu', id)) or '', '[^\n]+') do
    if k >= off + lim then break end
    if k >= off then us[#us + 1] = u end
    k = k + 1
  end
end
local out = {1, h}
local listed = #ARGV < 5 -- every u is a recipient
local members = nil
for _, u in ipairs(us) do
  local v = redis.call('HGET', key('rc', id), u)
  if not v then
    if not listed and not members then
      members = {}
      for m in string.gmatch(redis.call('GET', key('rcu', id)) or '', '[^\n]+') do members[m] = true end
    end
    if listed or members[u] then v = rc_default(h) else v = '' end
  end
  out[#out + 1] = u
  out[#out + 1] = v
  out[#out + 1] = redis.call('HGET', key('rce', id), u) or ''
end
return out
