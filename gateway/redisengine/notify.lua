-- pushgate's Redis scripts for offline notification (notify.go), in the
-- form of scripts.lua: ARGV[1] is the key prefix, KEYS[1] the lastid key
-- for routing only, and the prelude of scripts.lua comes first.
--
-- Keys (P = prefix):
--   P:pt:<user>     hash target id -> target (a user's push targets)
--   P:esc           zset "<user>\n<message id>" -> when the escalation is due (ms, Redis clock)
--   P:escd          hash "<user>\n<message id>" -> flag (1: only if unacked, 0: always) and data
--   P:rce:<id>      the receipt's escalations (scripts.lua, rc_esc)

-- @script addtarget
-- ARGV: P, user, id, data, max. Returns 1, or 0 when the user has max others.
local k = key('pt', ARGV[2])
if redis.call('HEXISTS', k, ARGV[3]) == 0 and redis.call('HLEN', k) >= tonumber(ARGV[5]) then
  return 0
end
redis.call('HSET', k, ARGV[3], ARGV[4])
return 1

-- @script schedule
-- ARGV: P, member, delay ms, flag..data, max. Returns 1, or 0 when max are pending.
local z = key('esc')
if not redis.call('ZSCORE', z, ARGV[2]) and redis.call('ZCARD', z) >= tonumber(ARGV[5]) then
  return 0
end
local due = nowms() + tonumber(ARGV[3])
redis.call('ZADD', z, due, ARGV[2])
redis.call('HSET', key('escd'), ARGV[2], ARGV[4])
local nl = string.find(ARGV[2], '\n', 1, true)
rc_esc(string.sub(ARGV[2], nl + 1), string.sub(ARGV[2], 1, nl - 1), function(e)
  e.s, e.d, e.t, e.r = 1, due, 0, nil
end)
return 1

-- @script claim
-- ARGV: P, limit, member (optional: claim only it). Takes the due
-- escalations atomically, so each is taken by one caller. Returns
-- member, data, cancelled (1: the message left the inbox) triples.
local now = nowms()
local z = key('esc')
local due
if ARGV[3] then
  local s = redis.call('ZSCORE', z, ARGV[3])
  due = {}
  if s and tonumber(s) <= now then due = {ARGV[3]} end
else
  due = redis.call('ZRANGEBYSCORE', z, '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
end
local out = {}
for _, m in ipairs(due) do
  redis.call('ZREM', z, m)
  local d = redis.call('HGET', key('escd'), m) or '0'
  redis.call('HDEL', key('escd'), m)
  local cancelled = 0
  local nl = string.find(m, '\n', 1, true)
  local u, id = string.sub(m, 1, nl - 1), string.sub(m, nl + 1)
  if string.sub(d, 1, 1) == '1' then
    local v = redis.call('HGET', key('im', u), id)
    if not v or tonumber(string.match(v, '^(%d+):')) <= now then cancelled = 1 end
  end
  rc_esc(id, u, function(e)
    e.t = now
    if cancelled == 1 then e.s = 2 else e.s = 3 end
  end)
  table.insert(out, m)
  table.insert(out, string.sub(d, 2))
  table.insert(out, cancelled)
end
return out

-- @script escresult
-- ARGV: P, user, message id, channel, target id, result, detail. Adds a
-- result to the user's escalation in the message's receipt (at most 16).
local now = nowms()
rc_esc(ARGV[3], ARGV[2], function(e)
  if e.s == 0 then e.s, e.t = 4, now end
  if not e.r then e.r = {} end
  if #e.r < 16 then
    table.insert(e.r, {ch = ARGV[4], tg = ARGV[5], r = ARGV[6], dt = ARGV[7], tm = now})
  end
end)
return 1
