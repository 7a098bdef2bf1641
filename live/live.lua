-- lbctl_live: upstream peers that change without an nginx reload.
--
-- lbctl POSTs every upstream's peers as JSON to api(); api() checks the shape
-- of the whole payload, then writes what changed into the lua_shared_dict
-- "lbctl_live", which every worker shares, old workers still finishing after
-- a reload included. balance() picks a peer per call with smooth weighted
-- round robin; gate() answers gRPC UNAVAILABLE when an upstream has no peers.
-- All validation of Consul data is lbctl's (Go); this file only refuses
-- anything off-shape and then keeps its last good set.
--
-- Shared dict keys:
--   "gen"                   integer, bumped after every write
--   "v:" .. name            the upstream's version (16 hex chars)
--   "p:" .. name .. ":" .. version
--                           its peers as a JSON array, written before "v:"
--                           points at it and deleted once "v:" points on.
-- A new version is stored under a new key, so a dict that is out of memory
-- refuses it (safe_set) and the old version keeps serving.

local json = require("cjson.safe").new()
local balancer = require("ngx.balancer")

json.decode_invalid_numbers(false) -- no NaN, Infinity or hex numbers

local M = {}

local DICT = "lbctl_live"
local MAX_PEERS = 10000
local MAX_UPSTREAMS = 10000

-- Worker-local state, one entry per upstream name:
--   gen      the dict's "gen" when this entry was last checked
--   version  the version its peers were decoded from (nil: no data)
--   peers    array of {host, port, weight, addr, key}
--   cur      smooth weighted round robin's current weights, by peer index
local cache = {}

---------------------------------------------------------------------------
-- Shape checks. Each returns nil when v is fine, else the reason.

local function show(v)
  if type(v) == "string" then
    if #v > 64 then v = v:sub(1, 64) .. "..." end
    return json.encode(v)
  end
  if v == json.null then return "null" end
  if type(v) == "table" then
    if next(v) == nil then return "an empty object or array" end
    return type(next(v)) == "number" and "an array" or "an object"
  end
  return tostring(v)
end

local function is_int(v, lo, hi)
  return type(v) == "number" and v == math.floor(v) and v >= lo and v <= hi
end

-- An object as cjson decodes it: string keys only. ({} and [] both decode to
-- an empty table; either is accepted as empty.)
local function is_object(v)
  if type(v) ~= "table" then return false end
  for k in pairs(v) do
    if type(k) ~= "string" then return false end
  end
  return true
end

local function is_array(v)
  if type(v) ~= "table" then return false end
  local n = 0
  for k in pairs(v) do
    if type(k) ~= "number" then return false end
    n = n + 1
  end
  return n == #v
end

-- octet: at most 3 digits, no leading zero, at most 255
local function octet(o)
  return #o <= 3 and (#o == 1 or o:byte(1) ~= 48) and tonumber(o) <= 255
end

local function is_ipv4(s)
  local a, b, c, d = s:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
  return a ~= nil and octet(a) and octet(b) and octet(c) and octet(d)
end

-- An IPv6 literal without brackets or zone: hex groups of 1-4 digits,
-- at most one "::", optionally ending in a dotted quad (two groups' worth).
local function is_ipv6(s)
  if #s > 45 or not s:find(":", 1, true) or s:find("[^0-9A-Fa-f:.]") then
    return false
  end
  local groups = 8
  local v4 = s:find(".", 1, true) and s:match(":([0-9.]+)$")
  if v4 then
    if not is_ipv4(v4) then return false end
    s = s:sub(1, #s - #v4) .. "0" -- stand-in group; the quad is two
    groups = 7
  end
  if s:find(".", 1, true) then return false end
  local double = s:find("::", 1, true)
  if double then
    if s:find("::", double + 1, true) or s:find(":::", 1, true) then return false end
    local head, tail = s:sub(1, double - 1), s:sub(double + 2)
    local n = 0
    for _, part in ipairs({ head, tail }) do
      if part ~= "" then
        for g in (part .. ":"):gmatch("([^:]*):") do
          if not g:match("^%x%x?%x?%x?$") then return false end
          n = n + 1
        end
      end
    end
    return n < groups
  end
  local n = 0
  for g in (s .. ":"):gmatch("([^:]*):") do
    if not g:match("^%x%x?%x?%x?$") then return false end
    n = n + 1
  end
  return n == groups
end

local PEER_FIELDS = { host = true, port = true, weight = true, id = true }

-- check_peer returns the peer's canonical JSON, or nil and the reason, which
-- the caller prefixes with where the peer is (built only on error: it is
-- the hot loop of a big push).
local function check_peer(p)
  if not is_object(p) then return nil, ": " .. show(p) .. " is not an object" end
  for k in pairs(p) do
    if not PEER_FIELDS[k] then return nil, ": unknown field " .. show(k) end
  end
  local host = p.host
  if type(host) ~= "string" or not (is_ipv4(host) or is_ipv6(host)) then
    return nil, ".host: " .. show(host) .. " is not an IPv4 or IPv6 literal"
  end
  if not is_int(p.port, 1, 65535) then
    return nil, ".port: " .. show(p.port) .. " is not 1-65535"
  end
  if not is_int(p.weight, 1, 10000) then
    return nil, ".weight: " .. show(p.weight) .. " is not 1-10000"
  end
  local id = p.id
  if id == nil or id == "" then
    return string.format('{"host":"%s","port":%d,"weight":%d}', host, p.port, p.weight)
  end
  if type(id) ~= "string" or #id > 256 or id:find("[^A-Za-z0-9._:@-]") then
    return nil, ".id: " .. show(id) .. " is not a plain [A-Za-z0-9._:@-] string"
  end
  return string.format('{"host":"%s","port":%d,"weight":%d,"id":"%s"}', host, p.port, p.weight, id)
end

-- check_upstream returns the canonical JSON of u's peers, or nil and the reason.
local function check_upstream(where, u)
  if not is_object(u) then return nil, where .. ": " .. show(u) .. " is not an object" end
  for k in pairs(u) do
    if k ~= "version" and k ~= "peers" then return nil, where .. ": unknown field " .. show(k) end
  end
  if type(u.version) ~= "string" or #u.version ~= 16 or u.version:find("[^0-9a-f]") then
    return nil, where .. ".version: " .. show(u.version) .. " is not 16 lowercase hex digits"
  end
  if not is_array(u.peers) then return nil, where .. ".peers: " .. show(u.peers) .. " is not an array" end
  if #u.peers > MAX_PEERS then
    return nil, where .. ".peers: " .. #u.peers .. " peers, more than " .. MAX_PEERS
  end
  local out, seen = {}, {}
  for i, p in ipairs(u.peers) do
    local canon, err = check_peer(p)
    if not canon then return nil, where .. ".peers[" .. (i - 1) .. "]" .. err end
    local key = p.host:lower() .. " " .. p.port
    if seen[key] then
      return nil, where .. ".peers[" .. (i - 1) .. "]: " .. show(p.host) .. " port " .. p.port
          .. " repeats peers[" .. seen[key] .. "]"
    end
    seen[key] = i - 1
    out[i] = canon
  end
  return "[" .. table.concat(out, ",") .. "]"
end

-- check_payload returns {name = {version, peers_json}} and prune, or nil and the reason.
local function check_payload(body)
  local doc, jerr = json.decode(body)
  if doc == nil then return nil, nil, "body is not JSON: " .. tostring(jerr) end
  if not is_object(doc) then return nil, nil, "body is not a JSON object" end
  for k in pairs(doc) do
    if k ~= "prune" and k ~= "upstreams" then return nil, nil, "unknown field " .. show(k) end
  end
  if doc.prune ~= nil and type(doc.prune) ~= "boolean" then
    return nil, nil, "prune: " .. show(doc.prune) .. " is not true or false"
  end
  if not is_object(doc.upstreams) then
    return nil, nil, "upstreams: " .. show(doc.upstreams) .. " is not an object"
  end
  local set, n = {}, 0
  for name, u in pairs(doc.upstreams) do
    local where = "upstreams." .. name
    if #name > 200 or not name:match("^[A-Za-z0-9_]+$") then
      return nil, nil, "upstreams: name " .. show(name) .. " is not 1-200 of [A-Za-z0-9_]"
    end
    n = n + 1
    if n > MAX_UPSTREAMS then return nil, nil, "upstreams: more than " .. MAX_UPSTREAMS end
    local peers, err = check_upstream(where, u)
    if not peers then return nil, nil, err end
    set[name] = { version = u.version, peers = peers }
  end
  return set, doc.prune == true
end

---------------------------------------------------------------------------
-- Dict writes.

-- versions returns {name = version} for every upstream the dict holds.
local function versions(dict)
  local out = {}
  for _, k in ipairs(dict:get_keys(0)) do
    if k:sub(1, 2) == "v:" then out[k:sub(3)] = dict:get(k) end
  end
  return out
end

-- versions_of returns {name = version} for the upstreams set names that the
-- dict holds: with 1,000 upstreams held, listing every key cost a push of
-- one upstream ~3 ms.
local function versions_of(dict, set)
  local out = {}
  for name in pairs(set) do out[name] = dict:get("v:" .. name) end
  return out
end

-- store writes the upstreams of set whose version changed and, with prune,
-- deletes the ones set does not name. It returns nil or the reason it stopped
-- (upstreams stored before that stay stored).
local function store(dict, set, prune, only_missing)
  local held = prune and versions(dict) or versions_of(dict, set)
  local changed = false
  local err
  for name, u in pairs(set) do
    local old = held[name]
    if old ~= u.version and not (only_missing and old) then
      local pkey = "p:" .. name .. ":" .. u.version
      local ok, serr = dict:safe_set(pkey, u.peers)
      if ok then
        -- "v:" values are all 16 bytes, so replacing one reuses its memory.
        ok, serr = dict:safe_set("v:" .. name, u.version)
        if not ok then dict:delete(pkey) end
      end
      if not ok then
        err = "upstreams." .. name .. ": " .. tostring(serr)
        break
      end
      if old then dict:delete("p:" .. name .. ":" .. old) end
      changed = true
    end
  end
  if prune and not err then
    for name, old in pairs(held) do
      if not set[name] then
        dict:delete("v:" .. name)
        dict:delete("p:" .. name .. ":" .. old)
        changed = true
      end
    end
  end
  if changed then dict:incr("gen", 1, 0) end
  return err
end

---------------------------------------------------------------------------
-- Per-call reads.

-- state returns the worker's entry for name, re-read from the dict only when
-- the dict's generation moved since it was last checked: one dict read per
-- call otherwise.
local function state(name)
  local dict = ngx.shared[DICT]
  local gen = dict:get("gen")
  local s = cache[name]
  if s and s.gen == gen then return s end
  local version = dict:get("v:" .. name)
  if s and s.version == version then
    s.gen = gen
    return s
  end
  local peers = {}
  if version then
    local raw = dict:get("p:" .. name .. ":" .. version)
    local list = raw and json.decode(raw)
    if not list then
      -- A newer write replaced this version between our two reads: keep
      -- what we had, unmarked, so the next call reads again.
      return s or { peers = peers }
    end
    for i, p in ipairs(list) do
      local addr = p.host:find(":", 1, true) and "[" .. p.host .. "]" or p.host
      peers[i] = { host = p.host, port = p.port, weight = p.weight, addr = addr, key = addr .. ":" .. p.port }
    end
  end
  local cur = {}
  for i = 1, #peers do cur[i] = 0 end
  s = { gen = gen, version = version, peers = peers, cur = cur }
  cache[name] = s
  return s
end

-- pick is nginx's smooth weighted round robin over the peers not in tried.
local function pick(s, tried)
  local peers, cur = s.peers, s.cur
  local best, total = nil, 0
  for i = 1, #peers do
    local p = peers[i]
    if not (tried and tried[p.key]) then
      cur[i] = cur[i] + p.weight
      total = total + p.weight
      if not best or cur[i] > cur[best] then best = i end
    end
  end
  if not best then return nil end
  cur[best] = cur[best] - total
  return peers[best]
end

-- balance sets the peer for this try of the call (balancer_by_lua_block).
-- A retry (grpc_next_upstream) goes only to a peer this call has not tried.
function M.balance(name)
  local s = state(name)
  local ctx = ngx.ctx
  local tried = ctx.lbctl_tried
  if not balancer.get_last_failure() then
    tried = nil
    if #s.peers > 1 then balancer.set_more_tries(#s.peers - 1) end
  end
  local p = pick(s, tried)
  if not p then
    ngx.log(ngx.ERR, "lbctl_live: upstream ", name, " has no peer left to try")
    return ngx.exit(ngx.ERROR)
  end
  if not tried then
    tried = {}
    ctx.lbctl_tried = tried
  end
  tried[p.key] = true
  local ok, err = balancer.set_current_peer(p.addr, p.port)
  if not ok then
    ngx.log(ngx.ERR, "lbctl_live: upstream ", name, ": set peer ", p.key, ": ", err)
    return ngx.exit(ngx.ERROR)
  end
end

-- gate answers the call with gRPC UNAVAILABLE (14), trailers-only, when the
-- upstream has no peers (access_by_lua_block); otherwise it does nothing.
function M.gate(name, service)
  if #state(name).peers > 0 then return end
  ngx.status = ngx.HTTP_OK
  ngx.header["Content-Type"] = "application/grpc"
  ngx.header["Content-Length"] = 0 -- headers with END_STREAM: trailers-only
  ngx.header["grpc-status"] = "14"
  ngx.header["grpc-message"] = "no healthy instances of " .. service
  return ngx.exit(ngx.HTTP_OK)
end

---------------------------------------------------------------------------
-- The API (content_by_lua_block on the unix socket server).

local function reply(status, body)
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  ngx.print(body, "\n")
  return ngx.exit(status)
end

local function reply_error(status, msg)
  return reply(status, json.encode({ error = msg }))
end

local function read_body()
  ngx.req.read_body()
  local body = ngx.req.get_body_data()
  if body then return body end
  local path = ngx.req.get_body_file() -- larger than client_body_buffer_size
  if not path then return "" end
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  body = f:read("*a")
  f:close()
  return body
end

local function get(dict)
  local parts = {}
  for name, version in pairs(versions(dict)) do
    local peers = dict:get("p:" .. name .. ":" .. version)
    if peers then
      -- names and versions are plain characters, checked before they were stored
      parts[#parts + 1] = string.format('"%s":{"version":"%s","peers":%s}', name, version, peers)
    end
  end
  return reply(200, '{"upstreams":{' .. table.concat(parts, ",") .. "}}")
end

local function post(dict)
  local body, rerr = read_body()
  if not body then return reply_error(500, "read body: " .. tostring(rerr)) end
  local set, prune, err = check_payload(body)
  if not set then
    ngx.log(ngx.WARN, "lbctl_live: refused push: ", err)
    return reply_error(400, err)
  end
  err = store(dict, set, prune, false)
  if err then
    ngx.log(ngx.ERR, "lbctl_live: push stopped: ", err)
    return reply_error(500, err)
  end
  -- With prune the answer is every upstream held; without, the ones pushed.
  local held = prune and versions(dict) or versions_of(dict, set)
  return reply(200, json.encode({ upstreams = held }))
end

function M.api()
  local dict = ngx.shared[DICT]
  if ngx.var.uri ~= "/v1/upstreams" then
    return reply_error(404, "no such path (the API is /v1/upstreams)")
  end
  local method = ngx.req.get_method()
  if method == "GET" then return get(dict) end
  if method == "POST" then return post(dict) end
  ngx.header["Allow"] = "GET, POST"
  return reply_error(405, "method " .. method .. " not allowed (GET or POST)")
end

---------------------------------------------------------------------------
-- Start-up (init_by_lua_block, in the master, on every start and reload).

-- init loads the seed file (the last push lbctl wrote to disk) into the dict
-- for the upstreams the dict does not hold yet: after a reload the dict
-- survives and is newer than the seed; after a crash or a first start it is
-- empty. A missing or malformed seed is logged; nginx still starts.
function M.init(seed)
  local dict = ngx.shared[DICT]
  dict:safe_add("gen", 0)
  local f = io.open(seed, "rb")
  if not f then
    ngx.log(ngx.NOTICE, "lbctl_live: no seed file ", seed, "; upstreams wait for the first push")
    return
  end
  local body = f:read("*a")
  f:close()
  local set, _, err = check_payload(body)
  if not set then
    ngx.log(ngx.ERR, "lbctl_live: seed file ", seed, " refused: ", err)
    return
  end
  err = store(dict, set, false, true)
  if err then ngx.log(ngx.ERR, "lbctl_live: seed file ", seed, ": ", err) end
end

return M
